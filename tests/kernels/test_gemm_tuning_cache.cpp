// The GEMM tuning cache file (kernels/gemm_tuning_cache.h): what it writes
// reads back word for word, a damaged file is refused with its name, line
// and what to do, saving merges with what another writer saved meanwhile and
// leaves no temporary file, and a missing file is an empty cache. The GPU
// side (a cached choice used, checked against the first answer's bits, or
// left out) is in tests/kernels_gpu (gemm_tuning_cache_skips_the_timing).
#define BOOST_TEST_MODULE gemm_tuning_cache
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "kernels/gemm_tuning_cache.h"

namespace fs = std::filesystem;
using vit::GemmTuningCache;
using vit::GemmTuningEntry;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "vit_gemm_cache_XXXXXX").string();
    BOOST_REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

GemmTuningEntry entry(const std::string& key, uint64_t seed, bool wide = false) {
  GemmTuningEntry e;
  e.gpu = "NVIDIA_H200/sm90/132";
  e.library = "cublasLt-120805";
  e.key = key;
  e.wide = wide;
  for (size_t w = 0; w < e.algo.size(); ++w) e.algo[w] = seed * 0x9e3779b97f4a7c15ull + w * 0xffffffff00000001ull;
  e.algo[7] = ~0ull;  // every bit of a word survives
  e.workspace = seed * 4096;
  return e;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

// The UserError `text` gives, "" when it reads.
std::string refusal(const std::string& text) {
  try {
    GemmTuningCache::parse(text, "cache.tsv");
  } catch (const vit::UserError& e) {
    return e.what();
  }
  return "";
}

const std::string kHeader = "# vit_hpc gemm tuning cache v1\n";

}  // namespace

BOOST_AUTO_TEST_CASE(entries_read_back_word_for_word) {
  const std::vector<GemmTuningEntry> in = {entry("2304,6304,768", 1), entry("768,6304,2304", 2, true),
                                           entry("3072,6304,768", 3)};
  const std::string text = GemmTuningCache::format(in);
  BOOST_TEST(text.rfind(kHeader, 0) == 0u);
  const std::vector<GemmTuningEntry> out = GemmTuningCache::parse(text, "x");
  BOOST_REQUIRE(out.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    BOOST_TEST((out[i] == in[i]));
    BOOST_TEST(out[i].algo[7] == ~0ull);
  }
  BOOST_TEST(out[1].wide);
  BOOST_TEST(!out[0].wide);
  // Whitespace inside a field would break the columns: refused when writing.
  GemmTuningEntry spaced = entry("1,2,3", 4);
  spaced.gpu = "NVIDIA H200";
  BOOST_CHECK_THROW(GemmTuningCache::format({spaced}), vit::Error);
}

BOOST_AUTO_TEST_CASE(a_damaged_file_is_refused_with_its_line_and_what_to_do) {
  const std::string good = GemmTuningCache::format({entry("1,2,3", 1)});
  BOOST_TEST(refusal(good).empty());
  BOOST_TEST(refusal(kHeader).empty());  // no entries yet
  const std::string todo = "cache.tsv is a cache of GEMM tuning results that vit_hpc writes "
                           "(plugin.gemm_tuning_cache); delete it";
  struct Case {
    std::string text, says;
  };
  const Case cases[] = {
      {"", "cache.tsv: empty file"},
      {"gpu\tlib\n", "cache.tsv: line 1 is not '# vit_hpc gemm tuning cache v1'"},
      {"# vit_hpc gemm tuning cache v2\n", "cache.tsv: line 1 is not"},
      {kHeader + "a\tb\tc\n", "cache.tsv: line 2: 3 tab-separated fields where 6 belong"},
      {kHeader + "# note\n\n" + "g\tl\tk\t2\t" + std::string(128, '0') + "\t0\n", "line 4: 'wide' is '2'"},
      {kHeader + "g\tl\tk\t1\t" + std::string(127, '0') + "z\t0\n", "line 2: the algorithm is not hexadecimal"},
      {kHeader + "g\tl\tk\t1\t" + std::string(127, '0') + "\t0\n", "line 2: the algorithm has 127 hex digits where 128 belong"},
      {kHeader + "g\tl\tk\t1\t" + std::string(128, 'f') + "\t-5\n", "line 2: the workspace '-5' is not a byte count"},
      {kHeader + "g\t\tk\t1\t" + std::string(128, 'f') + "\t5\n", "line 2: an empty field or one with spaces"},
  };
  for (const Case& c : cases) {
    const std::string said = refusal(c.text);
    BOOST_TEST_CONTEXT(c.says) {
      BOOST_TEST(said.find(c.says) != std::string::npos, said);
      BOOST_TEST(said.find(todo) != std::string::npos, said);
    }
  }
}

BOOST_AUTO_TEST_CASE(save_merges_with_another_writer_and_leaves_no_temporary) {
  TempDir dir;
  const fs::path path = dir.path / "tuning.tsv";
  GemmTuningCache a(path.string());  // missing file: empty
  BOOST_TEST(a.size() == 0u);
  BOOST_TEST(a.save() == 0u);
  BOOST_TEST(!fs::exists(path));  // nothing pending: nothing written

  a.put(entry("1,1,1", 1));
  a.put(entry("2,2,2", 2));
  BOOST_TEST(a.pending() == 2u);
  // Another rank or job saves meanwhile: its entry stays, ours win on the same key.
  GemmTuningCache b(path.string());
  b.put(entry("3,3,3", 3));
  b.put(entry("2,2,2", 20));
  BOOST_TEST(b.save() == 2u);
  BOOST_TEST(a.save() == 2u);
  BOOST_TEST(a.pending() == 0u);
  BOOST_TEST(a.save() == 0u);
  for (const auto& f : fs::directory_iterator(dir.path)) BOOST_TEST(f.path() == path);  // no temporary left

  GemmTuningCache c(path.string());
  BOOST_TEST(c.size() == 3u);
  const GemmTuningEntry* two = c.find("NVIDIA_H200/sm90/132", "cublasLt-120805", "2,2,2", false);
  BOOST_REQUIRE(two != nullptr);
  BOOST_TEST((*two == entry("2,2,2", 2)));
  BOOST_TEST(c.find("NVIDIA_H200/sm90/132", "cublasLt-120805", "3,3,3", false) != nullptr);
  // Another GPU model or library version does not find it.
  BOOST_TEST(c.find("NVIDIA_H100_80GB_HBM3/sm90/132", "cublasLt-120805", "2,2,2", false) == nullptr);
  BOOST_TEST(c.find("NVIDIA_H200/sm90/132", "cublasLt-120900", "2,2,2", false) == nullptr);
  // A wide tuning's entry is another one than the list's for the same key:
  // each kind of run finds only its own.
  BOOST_TEST(c.find("NVIDIA_H200/sm90/132", "cublasLt-120805", "2,2,2", true) == nullptr);
  // Putting what it holds changes nothing.
  c.put(entry("3,3,3", 3));
  BOOST_TEST(c.pending() == 0u);
  c.put(entry("3,3,3", 30, true));
  BOOST_TEST(c.pending() == 1u);
  BOOST_TEST(c.size() == 4u);
  BOOST_TEST((*c.find("NVIDIA_H200/sm90/132", "cublasLt-120805", "3,3,3", true) == entry("3,3,3", 30, true)));
  BOOST_TEST((*c.find("NVIDIA_H200/sm90/132", "cublasLt-120805", "3,3,3", false) == entry("3,3,3", 3)));
}

BOOST_AUTO_TEST_CASE(a_file_that_cannot_be_read_or_written_is_named) {
  TempDir dir;
  // A folder where the file belongs.
  try {
    GemmTuningCache d(dir.path.string());
    BOOST_FAIL("a folder was taken for a cache file");
  } catch (const vit::UserError& e) {
    BOOST_TEST(std::string(e.what()).find(dir.path.string() + ": not a regular file") != std::string::npos, e.what());
  }
  // A damaged file: the constructor refuses it, and nothing overwrites it.
  const fs::path damaged = dir.path / "damaged.tsv";
  write(damaged, "not a cache\n");
  BOOST_CHECK_THROW(GemmTuningCache{damaged.string()}, vit::UserError);
  BOOST_TEST(read(damaged) == "not a cache\n");
  // A folder that does not exist: save says which file and why.
  GemmTuningCache gone((dir.path / "no_such_folder" / "t.tsv").string());
  gone.put(entry("1,1,1", 1));
  try {
    gone.save();
    BOOST_FAIL("saved into a folder that does not exist");
  } catch (const vit::UserError& e) {
    const std::string said = e.what();
    BOOST_TEST(said.find("no_such_folder/t.tsv: cannot write a temporary file beside it (No such file or directory)") !=
                   std::string::npos,
               said);
  }
}
