// vit_data_prep on real Beans images: pixels against an independent
// reference, zip input, byte-identical output, and every refusal of item 4
// (bad input named, nothing left behind).
#define BOOST_TEST_MODULE data_prep
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>

#include <cstdio>

#include "core/error.h"
#include "data/dataset.h"
#include "data_prep/prep.h"
#include "data_test_util.h"

using namespace vit_test;
using vit::data::Hdf5Dataset;
using vit::data_prep::PrepOptions;
using vit::data_prep::prepare_dataset;

namespace {

// 3/2/1 images per class in train/validation/test: 18 images.
const std::vector<std::pair<std::string, int>> kMini = {{"train", 3}, {"validation", 2}, {"test", 1}};

PrepOptions options(const std::string& input, const std::string& output, int size, const std::string& storage = "raw") {
  PrepOptions o;
  o.inputs = {input};
  o.output = output;
  o.image_size = size;
  o.storage = storage;
  return o;
}

// Runs prepare_dataset expecting a UserError whose message contains every
// one of `needles`; checks that `out_dir` holds exactly what it held before.
void expect_refusal(const PrepOptions& o, const std::vector<std::string>& needles, const fs::path& out_dir) {
  const auto before = list_dir(out_dir);
  std::string msg;
  try {
    prepare_dataset(o);
  } catch (const vit::UserError& e) {
    msg = e.what();
  }
  BOOST_TEST_INFO("message: " << msg);
  BOOST_TEST(!msg.empty());
  for (const auto& n : needles) {
    BOOST_TEST_INFO("message: " << msg << " / expected to contain: " << n);
    BOOST_TEST(msg.find(n) != std::string::npos);
  }
  BOOST_TEST((list_dir(out_dir) == before), "the output folder changed (a file was left behind)");
}

// Compares every stored image with the reference resize of the source file.
// Tolerance: at most 1 grey level per channel, on at most 0.1% of the values
// (measured: 0.006% at 224 px, 0.003% at 37 px).
// stb_image_resize accumulates in float32 (relative error ~1e-6 of 255), so
// it can only disagree with the double-precision reference on the rounding
// of values within ~1e-3 of a .5 boundary; a real defect (wrong support,
// wrong centre, wrong edge rule) moves many values by several levels.
void check_pixels_against_reference(const std::string& h5, const fs::path& src_root, int S) {
  const Hdf5Dataset ds = Hdf5Dataset::open(h5);
  std::vector<uint8_t> got(static_cast<size_t>(S) * S * 3);
  size_t values = 0, differing = 0;
  int worst = 0;
  for (const auto& split : ds.info().splits) {
    for (int64_t i = 0; i < split.count; ++i) {
      int w = 0, h = 0;
      const auto rgb = decode_jpeg(read_file(src_root / ds.file(split.name, i)), &w, &h);
      const auto want = reference_resize(rgb, w, h, S, S);
      ds.read_image(split.name, i, got.data());
      int max_diff = 0;
      size_t off_by_one = 0;
      for (size_t k = 0; k < got.size(); ++k) {
        const int d = std::abs(int(got[k]) - int(want[k]));
        max_diff = std::max(max_diff, d);
        off_by_one += d != 0;
      }
      values += got.size();
      differing += off_by_one;
      worst = std::max(worst, max_diff);
      BOOST_TEST_INFO(split.name << "[" << i << "] " << ds.file(split.name, i));
      BOOST_TEST(max_diff <= 1);
      BOOST_TEST(off_by_one <= got.size() / 1000);
    }
  }
  BOOST_TEST_MESSAGE(S << " px: max |stored - reference| " << worst << ", values differing "
                       << 100.0 * differing / values << "%");
}

}  // namespace

BOOST_AUTO_TEST_CASE(raw_round_trip_matches_reference_resize) {
  TempDir tmp("prep_raw");
  copy_mini_beans(tmp.path() / "in", kMini);
  for (int S : {224, 37}) {  // shrink by 2.23 (the real case) and by an odd 13.5
    const std::string out = tmp.str("beans_" + std::to_string(S) + ".h5");
    const auto r = prepare_dataset(options(tmp.str("in"), out, S));
    BOOST_TEST(r.split_counts.size() == 3u);
    const Hdf5Dataset ds = Hdf5Dataset::open(out);
    const auto& info = ds.info();
    BOOST_TEST(info.class_names == kBeansClasses);
    BOOST_TEST(info.image_size == S);
    BOOST_TEST(info.storage == "raw");
    BOOST_TEST(info.source == tmp.str("in"));
    BOOST_TEST(info.content_checksum == r.checksum);
    BOOST_TEST(ds.size("train") == 9);
    BOOST_TEST(ds.size("validation") == 6);
    BOOST_TEST(ds.size("test") == 3);
    // Class-major order, sorted names: label i/3 in train, names carry their class.
    for (int64_t i = 0; i < 9; ++i) {
      BOOST_TEST(ds.label("train", i) == i / 3);
      BOOST_TEST(ds.file("train", i).rfind("train/" + kBeansClasses[i / 3] + "/", 0) == 0u);
    }
    BOOST_TEST(ds.file("train", 0) == "train/angular_leaf_spot/angular_leaf_spot_0000.jpg");
    ds.verify_checksum();
    check_pixels_against_reference(out, tmp.path() / "in", S);
  }
}

BOOST_AUTO_TEST_CASE(jpeg_storage_decodes_close_to_raw) {
  TempDir tmp("prep_jpeg");
  copy_mini_beans(tmp.path() / "in", kMini);
  const std::string raw = tmp.str("raw.h5"), jpg = tmp.str("jpg.h5");
  prepare_dataset(options(tmp.str("in"), raw, 224, "raw"));
  prepare_dataset(options(tmp.str("in"), jpg, 224, "jpeg"));
  const Hdf5Dataset a = Hdf5Dataset::open(raw), b = Hdf5Dataset::open(jpg);
  BOOST_TEST(b.info().storage == "jpeg");
  b.verify_checksum();
  std::vector<uint8_t> pa(224 * 224 * 3), pb(pa.size());
  double psnr_min = 1e9, psnr_max = 0;
  for (const auto& split : a.info().splits) {
    for (int64_t i = 0; i < split.count; ++i) {
      a.read_image(split.name, i, pa.data());
      b.read_image(split.name, i, pb.data());
      double se = 0;
      for (size_t k = 0; k < pa.size(); ++k) se += (double(pa[k]) - pb[k]) * (double(pa[k]) - pb[k]);
      const double psnr = 10 * std::log10(255.0 * 255.0 / (se / pa.size()));
      // Quality 95 with 4:4:4 chroma: measured 39.2-41.9 dB on these images
      // (libjpeg-turbo 2.1.5). 37 dB leaves room for other libjpeg-turbo
      // versions while a channel swap, a one-pixel shift or another image
      // falls far below (10-25 dB).
      psnr_min = std::min(psnr_min, psnr);
      psnr_max = std::max(psnr_max, psnr);
      BOOST_TEST_INFO(split.name << "[" << i << "] psnr " << psnr);
      BOOST_TEST(psnr > 37.0);
      BOOST_TEST(a.label(split.name, i) == b.label(split.name, i));
    }
  }
  BOOST_TEST_MESSAGE("jpeg storage at 224 px: PSNR " << psnr_min << " to " << psnr_max << " dB");
}

BOOST_AUTO_TEST_CASE(zip_input_gives_the_same_content_as_the_folder) {
  TempDir tmp("prep_zip");
  copy_mini_beans(tmp.path() / "in", kMini);
  std::vector<std::string> zips;
  for (const char* split : {"train", "validation", "test"}) {
    zips.push_back(tmp.str(std::string(split) + ".zip"));
    make_zip(tmp.path() / "in", split, zips.back());
  }
  const auto from_dir = prepare_dataset(options(tmp.str("in"), tmp.str("dir.h5"), 48));
  PrepOptions o = options("", tmp.str("zip.h5"), 48);
  o.inputs = zips;
  const auto from_zip = prepare_dataset(o);
  // Same labels and pixels in the same order: the same content checksum.
  BOOST_TEST(from_zip.checksum == from_dir.checksum);
  const Hdf5Dataset z = Hdf5Dataset::open(tmp.str("zip.h5"));
  BOOST_TEST(z.info().class_names == kBeansClasses);
  const Hdf5Dataset d = Hdf5Dataset::open(tmp.str("dir.h5"));
  for (int64_t i = 0; i < 6; ++i) BOOST_TEST(z.file("validation", i) == d.file("validation", i));
  BOOST_TEST(z.file("validation", 2).rfind("validation/bean_rust/", 0) == 0u);
  BOOST_TEST(z.info().source == zips[0] + ", " + zips[1] + ", " + zips[2]);

  // Only the archives of the splits asked for are needed.
  PrepOptions one = options("", tmp.str("train_only.h5"), 48);
  one.inputs = {zips[0]};
  one.splits = {"train"};
  BOOST_TEST(prepare_dataset(one).split_counts.at(0).second == 9);
  // ... and a split asked for but in no archive is refused.
  one.output = tmp.str("x.h5");
  one.splits = {"train", "validation"};
  expect_refusal(one, {"no split 'validation'", zips[0]}, tmp.path());

  // A damaged archive entry (a truncated JPEG inside a zip) names archive and entry.
  {
    const fs::path bad = tmp.path() / "bad";
    copy_mini_beans(bad, {{"train", 1}});
    const fs::path victim = bad / "train" / "healthy" / "healthy_0000.jpg";
    auto bytes = read_file(victim);
    write_file(victim, bytes.data(), bytes.size() / 2);
    make_zip(bad, "train", tmp.path() / "bad_train.zip");
    PrepOptions b = options("", tmp.str("bad.h5"), 32);
    b.inputs = {tmp.str("bad_train.zip")};
    b.splits = {"train"};
    expect_refusal(b, {tmp.str("bad_train.zip") + ":train/healthy/healthy_0000.jpg", "not a decodable JPEG"},
                   tmp.path());
  }
}

BOOST_AUTO_TEST_CASE(same_input_gives_byte_identical_files) {
  TempDir tmp("prep_det");
  copy_mini_beans(tmp.path() / "in", kMini);
  for (const char* storage : {"raw", "jpeg"}) {
    PrepOptions a = options(tmp.str("in"), tmp.str(std::string("a_") + storage + ".h5"), 64, storage);
    a.threads = 1;
    PrepOptions b = a;
    b.output = tmp.str(std::string("b_") + storage + ".h5");
    b.threads = 3;  // different thread count and timing, same bytes
    prepare_dataset(a);
    prepare_dataset(b);
    BOOST_TEST_INFO(storage);
    BOOST_TEST((read_file(a.output) == read_file(b.output)));
  }
}

BOOST_AUTO_TEST_CASE(classes_option_sets_label_order) {
  TempDir tmp("prep_classes");
  copy_mini_beans(tmp.path() / "in", {{"train", 1}});
  PrepOptions o = options(tmp.str("in"), tmp.str("c.h5"), 16);
  o.splits = {"train"};
  o.classes = {"healthy", "bean_rust", "angular_leaf_spot"};
  prepare_dataset(o);
  const Hdf5Dataset ds = Hdf5Dataset::open(o.output);
  BOOST_TEST(ds.info().class_names == o.classes);
  BOOST_TEST(ds.file("train", 0) == "train/healthy/healthy_0000.jpg");
  BOOST_TEST(ds.label("train", 0) == 0);
  // A class folder missing from --classes is refused.
  o.output = tmp.str("d.h5");
  o.classes = {"healthy", "bean_rust"};
  expect_refusal(o, {"angular_leaf_spot", "not in --classes"}, tmp.path());
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_refused_naming_the_file) {
  TempDir tmp("prep_bad");
  const fs::path out_dir = tmp.path() / "out";
  fs::create_directories(out_dir);
  const std::string out = (out_dir / "x.h5").string();

  // A missing input folder.
  expect_refusal(options(tmp.str("nowhere"), out, 32), {tmp.str("nowhere"), "no such folder"}, out_dir);

  // A missing split folder.
  const fs::path in = tmp.path() / "in";
  copy_mini_beans(in, {{"train", 1}, {"validation", 1}});
  expect_refusal(options(in.string(), out, 32), {(in / "test").string(), "missing split folder"}, out_dir);

  // An empty split folder, then an empty class folder.
  fs::create_directories(in / "test");
  expect_refusal(options(in.string(), out, 32), {(in / "test").string(), "empty folder"}, out_dir);
  for (const auto& c : kBeansClasses) fs::create_directories(in / "test" / c);
  expect_refusal(options(in.string(), out, 32), {(in / "test" / "angular_leaf_spot").string(), "empty folder"},
                 out_dir);
  for (const auto& c : kBeansClasses) {
    fs::copy_file(in / "train" / c / (c + "_0000.jpg"), in / "test" / c / (c + "_0000.jpg"));
  }
  BOOST_TEST(prepare_dataset(options(in.string(), out, 32)).split_counts.size() == 3u);  // now complete

  // The output exists: refused without --overwrite (and left untouched), replaced with it.
  const auto first = read_file(out);
  expect_refusal(options(in.string(), out, 32), {out, "already exists", "--overwrite"}, out_dir);
  BOOST_TEST((read_file(out) == first));
  PrepOptions ow = options(in.string(), out, 16);
  ow.overwrite = true;
  prepare_dataset(ow);
  BOOST_TEST(Hdf5Dataset::open(out).info().image_size == 16);
  fs::remove(out);

  // A file that is not an image, in the last split: refused, and the
  // temporary file (train and validation already written) is removed.
  const fs::path text = in / "test" / "healthy" / "notes.jpg";
  write_file(text, "not a jpeg\n", 11);
  expect_refusal(options(in.string(), out, 32), {text.string(), "not a decodable JPEG"}, out_dir);
  fs::remove(text);

  // A truncated JPEG (TurboJPEG only warns "Premature end of JPEG file").
  const fs::path victim = in / "validation" / "bean_rust" / "bean_rust_0000.jpg";
  const auto bytes = read_file(victim);
  write_file(victim, bytes.data(), bytes.size() * 2 / 3);
  expect_refusal(options(in.string(), out, 32), {victim.string(), "not a decodable JPEG"}, out_dir);
  write_file(victim, bytes.data(), bytes.size());

  // An empty file is not an image either.
  const fs::path empty = in / "train" / "healthy" / "zz_empty.jpg";
  write_file(empty, "", 0);
  expect_refusal(options(in.string(), out, 32), {empty.string(), "not a decodable JPEG"}, out_dir);
  fs::remove(empty);

  // A stray file where class folders belong.
  write_file(in / "train" / "labels.csv", "x", 1);
  expect_refusal(options(in.string(), out, 32), {(in / "train" / "labels.csv").string(), "unexpected file"}, out_dir);
  fs::remove(in / "train" / "labels.csv");

  // Unwritable outputs: a folder that does not exist, a "folder" that is a
  // file, a folder without write permission (not for root, who may write
  // anywhere), the output path being a folder.
  expect_refusal(options(in.string(), (out_dir / "no" / "x.h5").string(), 32), {(out_dir / "no" / "x.h5").string(),
                 "does not exist"}, out_dir);
  write_file(out_dir / "plain", "x", 1);
  expect_refusal(options(in.string(), (out_dir / "plain" / "x.h5").string(), 32), {(out_dir / "plain" / "x.h5").string(),
                 "cannot write"}, out_dir);
  fs::remove(out_dir / "plain");
  expect_refusal(options(in.string(), out_dir.string(), 32), {out_dir.string(), "is a folder"}, out_dir);
  if (geteuid() != 0) {
    const fs::path ro = tmp.path() / "readonly";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    expect_refusal(options(in.string(), (ro / "x.h5").string(), 32), {(ro / "x.h5").string(), "not writable"}, ro);
    fs::permissions(ro, fs::perms::owner_all);
  } else {
    // root: /proc accepts no new files, whatever the permissions say.
    PrepOptions p = options(in.string(), "/proc/vit_data_prep_test.h5", 32);
    std::string msg;
    try {
      prepare_dataset(p);
    } catch (const vit::UserError& e) {
      msg = e.what();
    }
    BOOST_TEST(msg.find("/proc/vit_data_prep_test.h5") != std::string::npos, msg);
    BOOST_TEST(!fs::exists("/proc/vit_data_prep_test.h5"));
  }

  // Option values outside what is allowed.
  PrepOptions bad_storage = options(in.string(), out, 32, "png");
  expect_refusal(bad_storage, {"--storage", "png", "raw, jpeg"}, out_dir);
  expect_refusal(options(in.string(), out, 0), {"--image-size", "0"}, out_dir);
  BOOST_TEST(list_dir(out_dir).empty());
}

BOOST_AUTO_TEST_CASE(command_line_tool) {
  TempDir tmp("prep_cli");
  copy_mini_beans(tmp.path() / "in", {{"train", 1}});
  auto run = [&](const std::string& args, std::string* output) {
    const std::string log = tmp.str("log.txt");
    const std::string cmd = std::string(VIT_DATA_PREP_EXE) + " " + args + " > " + log + " 2>&1";
    const int status = std::system(cmd.c_str());
    const auto text = read_file(log);
    *output = std::string(text.begin(), text.end());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string text;
  BOOST_TEST(run("--help", &text) == 0);
  for (const char* opt : {"--input", "--output", "--image-size", "--storage", "--classes", "--splits", "--overwrite",
                          "--threads", "--quiet"}) {
    BOOST_TEST(text.find(opt) != std::string::npos, opt);
  }
  const std::string out = tmp.str("cli.h5");
  BOOST_TEST(run("--input " + tmp.str("in") + " --output " + out + " --splits train --image-size 24 --storage jpeg",
                 &text) == 0);
  BOOST_TEST(text.find("train 3") != std::string::npos, text);  // the summary line
  BOOST_TEST(Hdf5Dataset::open(out).info().storage == "jpeg");
  BOOST_TEST(run("--input " + tmp.str("in") + " --output " + out + " --splits train", &text) == 1);
  BOOST_TEST(text.find("already exists") != std::string::npos, text);
  BOOST_TEST(run("--input " + tmp.str("in") + " --output " + out + " --image-size abc", &text) == 2);
}
