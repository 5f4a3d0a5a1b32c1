// vit_data_prep: packs <split>/<class>/*.jpg images (a folder or the published
// zip archives) into the HDF5 file the trainer reads. See data_prep/prep.h
// and src/data/format.h for what is written.
#include <hdf5.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>

#include "core/error.h"
#include "data_prep/prep.h"

namespace po = boost::program_options;

namespace {

std::atomic<bool> g_cancel{false};
extern "C" void on_signal(int) { g_cancel.store(true); }

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // HDF5's exit handler closes files still open. After a failed final flush
  // (a disk that filled up at the last moment) the library's own state is
  // broken and that handler crashes; every file is closed (or discarded) on
  // our paths, so there is nothing for it to do. Must precede any HDF5 call.
  H5dont_atexit();
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported
  // like a full disk, instead of killing the process with SIGXFSZ and
  // leaving the temporary file behind.
  std::signal(SIGXFSZ, SIG_IGN);
  vit::data_prep::PrepOptions opts;
  std::string classes, splits = "train,validation,test";
  bool quiet = false;
  po::options_description desc(
      "vit_data_prep: decode, resize and pack images into one HDF5 file for vit_hpc\n\n"
      "Usage: vit_data_prep --input DIR|A.zip [B.zip ...] --output FILE.h5 [options]\n\n"
      "Input layout: <split>/<class>/<image>.jpg (a folder, or zip archives holding it).\n"
      "Output: per split /<split>/images, labels, files, digests; see src/data/format.h.\n"
      "Refused: an output inside the input folder, an image above 100 megapixels; noted: images\n"
      "upscaled more than 4x or shrunk more than 32x, stale temporaries of killed runs (removed).\n"
      "Exit status: 0 written, 1 refused or failed (nothing left behind), 2 bad command line.\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("input,i", po::value<std::vector<std::string>>(&opts.inputs)->multitoken(),
     "a folder of <split>/<class>/*.jpg, or one or more .zip archives holding the same layout")
    ("output,o", po::value<std::string>(&opts.output), "the HDF5 file to write")
    ("image-size", po::value<int>(&opts.image_size)->default_value(224),
     "side of the square output images in pixels (antialiased bilinear resize)")
    ("storage", po::value<std::string>(&opts.storage)->default_value("raw"),
     "raw: uint8 pixels (fast to read); jpeg: the resized images re-encoded at quality 95 (compact)")
    ("classes", po::value<std::string>(&classes),
     "comma-separated class folder names in label order (default: alphabetical)")
    ("splits", po::value<std::string>(&splits)->default_value(splits), "comma-separated splits to pack")
    ("overwrite", po::bool_switch(&opts.overwrite), "replace an existing output file")
    ("threads", po::value<int>(&opts.threads)->default_value(0), "worker threads (0: all cores)")
    ("quiet,q", po::bool_switch(&quiet), "no progress bar and no summary line");
  // clang-format on
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
    opts.classes = split_commas(classes);
    opts.splits = split_commas(splits);
    opts.progress = !quiet && isatty(STDERR_FILENO);
    opts.cancel = &g_cancel;
    opts.note = [](const std::string& line) { std::cerr << "vit_data_prep: note: " << line << std::endl; };
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const auto result = vit::data_prep::prepare_dataset(opts);
    if (!quiet) std::cout << vit::data_prep::summary_line(opts, result) << std::endl;
    return 0;
  } catch (const po::error& e) {
    std::cerr << "vit_data_prep: " << e.what() << " (see --help)\n";
    return 2;
  } catch (const vit::UserError& e) {
    std::cerr << "vit_data_prep: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "vit_data_prep: internal error: " << e.what() << "\n";
    return 1;
  }
}
