// The whole Beans dataset through vit_data_prep at 32 px: the published split
// sizes and class names, and a checksum the reader agrees with.
#define BOOST_TEST_MODULE data_prep_beans
#include <boost/test/unit_test.hpp>

#include "data/dataset.h"
#include "data_prep/prep.h"
#include "data_test_util.h"

using namespace vit_test;

BOOST_AUTO_TEST_CASE(full_beans_at_32_px) {
  TempDir tmp("prep_beans");
  vit::data_prep::PrepOptions o;
  o.inputs = {kBeans};
  o.output = tmp.str("beans_32.h5");
  o.image_size = 32;
  const auto r = vit::data_prep::prepare_dataset(o);
  BOOST_TEST_MESSAGE(vit::data_prep::summary_line(o, r));
  const auto ds = vit::data::Hdf5Dataset::open(o.output);
  BOOST_TEST(ds.info().class_names == kBeansClasses);
  BOOST_TEST(ds.size("train") == 1034);
  BOOST_TEST(ds.size("validation") == 133);
  BOOST_TEST(ds.size("test") == 128);
  // Per-class counts from the dataset's README.
  const std::vector<std::pair<std::string, std::vector<int>>> per_class = {
      {"train", {345, 348, 341}}, {"validation", {44, 45, 44}}, {"test", {43, 43, 42}}};
  for (const auto& [split, want] : per_class) {
    std::vector<int> got(3, 0);
    for (int64_t l : ds.labels(split)) ++got.at(l);
    BOOST_TEST(got == want, split);
  }
  ds.verify_checksum();
  ds.check_matches(32, 3);
}
