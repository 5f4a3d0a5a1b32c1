// Issue 9, finding 2 where no full disk can be made: a file-size limit
// (ulimit -f) makes the writes fail the same way. vit_data_prep used to be
// killed by SIGXFSZ (exit 153) with its temporary left behind; now it
// reports the limit in one line, exits 1 and removes the temporary.
#define BOOST_TEST_MODULE robust_file_limit
#include <boost/test/unit_test.hpp>

#include "robust_util.h"

using namespace robust;

BOOST_AUTO_TEST_CASE(data_prep_over_a_file_size_limit_says_so_and_leaves_nothing) {
  TempDir tmp("file_limit");
  make_image_tree(tmp.path() / "img", 4);
  fs::create_directories(tmp.path() / "out");
  const std::string out = tmp.str("out/data.h5");
  // 16 blocks (8 or 16 KiB, as the shell counts them) against a file of
  // more than 28 KB: 36 images of 16 x 16 x 3 bytes plus HDF5's records.
  const Result r = shell("ulimit -f 16 && " + kDataPrep + " --input " + tmp.str("img") + " --output " + out +
                         " --image-size 16 --quiet");
  BOOST_TEST(r.status == 1, r.output);
  BOOST_TEST(r.output == "vit_data_prep: error: " + out + ": cannot write (File too large): a file-size limit stops "
                         "it (see ulimit -f), or the file system takes no files this large; nothing was written\n");
  BOOST_TEST(fs::is_empty(tmp.path() / "out"));  // neither the output nor a temporary
}
