// The vit_hpc command line (see cli.h).
//
// Parsing happens before MPI_Init so that --help and --print-spec work on a
// login node without a launcher; a parse error is kept and reported after
// MPI_Init like a spec error, so that under mpirun it too is printed once
// and every rank exits 2.
//
// The first word may name a sub-command. Today there is one, `train`, which
// is also what a bare `vit_hpc SPEC` does; a new one (`predict`, say) is a
// new entry in kCommands and a branch in vit_cli_main, with its own options.
#include "io/cli.h"

#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <vector>

#include <boost/program_options.hpp>

#include "core/error.h"
#include "io/rank_agreement.h"

namespace po = boost::program_options;

namespace vit {
namespace {

struct Command {
  const char* name;
  const char* summary;
};
const Command kCommands[] = {
    {"train", "train (or benchmark) the experiment SPEC describes; the default command"},
    {"predict", "run a trained model over an HDF5 split or a folder of images (vit_hpc predict --help)"},
    {"export", "a training-state checkpoint as a Hugging Face folder (vit_hpc export --help)"},
};

struct CommandLine {
  std::string command = "train";
  std::string spec_path;
  std::vector<std::string> overrides;
  bool check = false;
  bool print_spec = false;
  bool help = false;
};

po::options_description visible_options() {
  po::options_description opts("Options");
  opts.add_options()
      ("set", po::value<std::vector<std::string>>()->composing()->value_name("section.field=value"),
       "override one field of the spec (repeatable; later wins), e.g. --set train.lr=1e-4")
      ("check", "validate the spec for this many ranks and check what it names (plugin, device, data file and "
                "its checksums, checkpoints, export and results folders) as a run would; print the resolved "
                "spec, run nothing")
      ("print-spec", "print every field of the spec with its type, default and meaning (no MPI)")
      ("help,h", "print this help (no MPI)");
  return opts;
}

std::string help_text() {
  std::ostringstream out;
  out << "vit_hpc: train a Vision Transformer from a YAML experiment spec.\n\n"
         "Usage:\n"
         "  mpirun -np N vit_hpc [train] SPEC [--set section.field=value]...\n"
         "  mpirun -np N vit_hpc SPEC --check [--set ...]   validate for N ranks, print the resolved spec\n"
         "  vit_hpc --print-spec                            every field: type, default, meaning\n"
         "  vit_hpc --help\n\n"
         "Commands:\n";
  for (const Command& c : kCommands) out << "  " << c.name << "    " << c.summary << "\n";
  out << "\nSPEC is a YAML file (see --print-spec); without one every field keeps its default.\n\n"
      << visible_options()
      << "\nExit status: 0 success; 2 bad command line or spec (on every rank, before any GPU\n"
         "is touched); otherwise the status of the run.\n";
  return out.str();
}

bool is_command(const std::string& word) {
  for (const Command& c : kCommands) {
    if (word == c.name) return true;
  }
  return false;
}

// A first word that is neither an option, a command, nor a file, and looks
// like a command (no '.' or '/'): a mistyped command rather than a spec.
bool looks_like_command(const std::string& word) {
  return !word.empty() && word[0] != '-' && word.find_first_of("./") == std::string::npos &&
         !std::filesystem::exists(word);
}

// Throws UserError (text without the "vit_hpc: " prefix) on a bad command line.
CommandLine parse_command_line(int argc, char** argv) {
  CommandLine cl;
  int first = 1;
  if (argc > 1 && is_command(argv[1])) {
    cl.command = argv[1];
    first = 2;
    // predict and export have their own options and run without MPI:
    // src/main.cpp sends them to src/train/ before this parser is reached.
    if (cl.command == "predict" || cl.command == "export") {
      throw UserError(str_cat(cl.command, " is not handled by this program's command line"));
    }
  } else if (argc > 1 && looks_like_command(argv[1])) {
    std::string allowed;
    for (const Command& c : kCommands) allowed += std::string(c.name) + ", ";
    throw UserError(str_cat("unknown command '", argv[1], "' (allowed: ", allowed,
                            "or a spec file; see vit_hpc --help)"));
  }

  po::options_description all = visible_options();
  all.add_options()("spec", po::value<std::string>(), "the spec file");
  po::positional_options_description positional;
  positional.add("spec", 1);

  std::vector<std::string> args(argv + first, argv + argc);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UserError(str_cat(e.what(), " (see vit_hpc --help)"));
  }
  cl.help = vm.count("help") > 0;
  cl.print_spec = vm.count("print-spec") > 0;
  cl.check = vm.count("check") > 0;
  if (vm.count("spec")) cl.spec_path = vm["spec"].as<std::string>();
  if (vm.count("set")) cl.overrides = vm["set"].as<std::vector<std::string>>();
  return cl;
}

// Before MPI_Init the rank is only known from the launcher's environment;
// used so that `mpirun -np 4 vit_hpc --help` prints once.
bool launcher_rank_is_zero() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    const char* v = std::getenv(var);
    if (v != nullptr) return std::string(v) == "0";
  }
  return true;
}

}  // namespace

int vit_cli_main(int argc, char** argv, const RunFn& run) { return vit_cli_main(argc, argv, nullptr, run); }

int vit_cli_main(int argc, char** argv, const PreflightFn& preflight, const RunFn& run) {
  CommandLine cl;
  std::string usage_error;
  try {
    cl = parse_command_line(argc, argv);
  } catch (const UserError& e) {
    usage_error = str_cat("vit_hpc: ", e.what());
  }
  if (usage_error.empty() && (cl.help || cl.print_spec)) {
    if (launcher_rank_is_zero()) std::cout << (cl.help ? help_text() : print_schema()) << std::flush;
    return 0;
  }

  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  }
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto finish = [&](int status) {
    std::cout << std::flush;
    std::cerr << std::flush;
    if (!already) MPI_Finalize();
    return status;
  };

  // Every rank loads and validates on its own (no rank trusts another's
  // file system), then all agree: the first failing rank speaks.
  ExperimentSpec spec;
  std::string problem = usage_error;
  if (problem.empty()) {
    try {
      spec = load_spec(cl.spec_path, cl.overrides);
      validate_layout(spec, world);
    } catch (const UserError& e) {
      problem = e.what();
    } catch (const std::exception& e) {
      problem = str_cat("vit_hpc: internal error while reading the spec: ", e.what());
    }
  }
  const int first_failing = io::first_failing_rank(!problem.empty());
  if (first_failing >= 0) {
    if (rank == first_failing) {
      if (rank != 0) std::cerr << "vit_hpc: rank " << rank << " of " << world << ":\n";
      std::cerr << problem << "\n";
    }
    return finish(2);
  }

  // What the spec names (data, devices, destinations): the same checks for
  // --check and for a run.
  std::vector<std::string> notes;
  if (preflight) {
    try {
      io::agree_or_throw(
          [&] {
            try {
              notes = preflight(spec);
            } catch (const UserError&) {
              throw;
            } catch (const std::exception& e) {
              throw UserError(str_cat("internal error in the checks before the run: ", e.what()));
            }
          },
          "error: ");
    } catch (const io::AgreedFailure& e) {
      return finish(e.exit_status());
    }
  }

  if (cl.check) {
    if (rank == 0) {
      const int model_ranks = spec.plugin.tp_size * spec.plugin.pp_size;
      std::cout << "# vit_hpc --check: " << (cl.spec_path.empty() ? "the defaults" : cl.spec_path)
                << " is valid for " << world << (world == 1 ? " rank" : " ranks") << " (dp "
                << world / model_ranks << " x pp " << spec.plugin.pp_size << " x tp " << spec.plugin.tp_size
                << ")\n";
      for (const std::string& n : notes) std::cout << "# note: " << n << "\n";
      std::cout << resolved_yaml(spec);
    }
    return finish(0);
  }
  if (rank == 0) {
    for (const std::string& n : notes) std::cout << "vit_hpc: note: " << n << "\n";
    std::cout << std::flush;
  }

  int status = 0;
  try {
    status = run(spec, cl.spec_path);
  } catch (const io::AgreedFailure& e) {
    // Every rank is here together, the message printed once: no abort.
    return finish(e.exit_status());
  } catch (const std::exception& e) {
    // Other ranks may be inside a collective this rank will never join.
    std::cerr << "vit_hpc: rank " << rank << " of " << world << ": " << e.what() << std::endl;
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
  return finish(status);
}

int subcommand_failure(const char* command) {
  try {
    throw;
  } catch (const po::error& e) {
    std::fprintf(stderr, "%s: %s (see %s --help)\n", command, e.what(), command);
    return 2;
  } catch (const UserError& e) {
    std::fprintf(stderr, "%s: %s\n", command, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", command, e.what());
    return 1;
  }
}

}  // namespace vit
