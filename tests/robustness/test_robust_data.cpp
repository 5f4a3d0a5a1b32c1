// Issue 9, findings 1, 2 and 8 at the data layer: damage inside a
// vit_data_prep file is found and located (split, image, source file), an
// older file without per-image digests is still read and verified whole;
// vit_data_prep removes what killed runs left, refuses an output inside its
// input and images above its pixel limit, and notes images far from the
// output size; a folder of images given as the data file gets the command
// that packs it. Every input is made here: synthetic JPEGs, files packed
// from them, then damaged on purpose.
#define BOOST_TEST_MODULE robust_data
#include <boost/test/unit_test.hpp>

#include <hdf5.h>
#include <signal.h>

#include <cstring>

#include "core/error.h"
#include "data/dataset.h"
#include "robust_util.h"

using namespace robust;
using vit::data::Hdf5Dataset;

namespace {

// The UserError message `f` throws ("" when it throws none).
template <typename F>
std::string user_error(F&& f) {
  try {
    f();
  } catch (const vit::UserError& e) {
    return e.what();
  }
  return "";
}

// Bit rot: XORs up to `bytes` stored bytes of raw image `index` of `split`,
// found through HDF5's chunk index (one chunk per image), directly in the
// file, as a failing disk would.
void corrupt_raw_image(const std::string& path, const std::string& split, hsize_t index, size_t bytes) {
  haddr_t address = 0;
  hsize_t size = 0;
  {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, (split + "/images").c_str(), H5P_DEFAULT);
    const hsize_t offset[4] = {index, 0, 0, 0};
    unsigned mask = 0;
    BOOST_REQUIRE(H5Dget_chunk_info_by_coord(d, offset, &mask, &address, &size) >= 0);
    H5Dclose(d);
    H5Fclose(f);
  }
  std::fstream io(path, std::ios::binary | std::ios::in | std::ios::out);
  std::vector<char> buf(std::min<size_t>(bytes, size));
  io.seekg(static_cast<std::streamoff>(address));
  io.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(buf[i] ^ static_cast<char>(0x5a + i));
  io.seekp(static_cast<std::streamoff>(address));
  io.write(buf.data(), static_cast<std::streamsize>(buf.size()));
}

// Rewrites label `index` of `split` through HDF5: the file stays well formed,
// its content changed.
void rewrite_label(const std::string& path, const std::string& split, hsize_t index, int64_t label) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, (split + "/labels").c_str(), H5P_DEFAULT);
  const hid_t fs = H5Dget_space(d);
  const hsize_t one = 1;
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, &index, nullptr, &one, nullptr);
  const hid_t ms = H5Screate_simple(1, &one, nullptr);
  BOOST_REQUIRE(H5Dwrite(d, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, &label) >= 0);
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
  H5Fclose(f);
}

// Replaces the stored JPEG bytes of image `index` with `bytes`.
void rewrite_jpeg_bytes(const std::string& path, const std::string& split, hsize_t index,
                        std::vector<unsigned char> bytes) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, (split + "/images").c_str(), H5P_DEFAULT);
  const hid_t fs = H5Dget_space(d);
  const hsize_t one = 1;
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, &index, nullptr, &one, nullptr);
  const hid_t ms = H5Screate_simple(1, &one, nullptr);
  const hid_t vlen = H5Tvlen_create(H5T_NATIVE_UINT8);
  hvl_t vl{bytes.size(), bytes.data()};
  BOOST_REQUIRE(H5Dwrite(d, vlen, ms, fs, H5P_DEFAULT, &vl) >= 0);
  H5Tclose(vlen);
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
  H5Fclose(f);
}

// Removes every split's per-image digests: the file as the vit_data_prep of
// before issue 9 wrote it.
void strip_digests(const std::string& path) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  for (const char* split : {"train", "validation", "test"}) {
    BOOST_REQUIRE(H5Ldelete(f, (std::string(split) + "/digests").c_str(), H5P_DEFAULT) >= 0);
  }
  H5Fclose(f);
}

// A pid that ran and has ended (reaped): no process has it now.
pid_t finished_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

std::string host_name() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace

// Finding 1: 4 KB of changed pixels in one training image used to train
// silently (the checksum was never verified outside the tests), and a
// failed check could only say "the file is damaged". Now every image has
// its own digest: the damaged one is named.
BOOST_AUTO_TEST_CASE(a_damaged_image_is_named_by_split_index_and_source_file) {
  TempDir tmp("damaged_raw");
  make_image_tree(tmp.path() / "img", 4);
  const std::string h5 = tmp.str("data.h5");
  prep(tmp.str("img"), h5);
  BOOST_TEST(user_error([&] { Hdf5Dataset::open(h5).verify_checksum(); }).empty());  // intact: passes

  corrupt_raw_image(h5, "train", 4, 4096);  // class-major: image 4 is the first bean_rust image
  const std::string msg = user_error([&] { Hdf5Dataset::open(h5).verify_checksum(); });
  BOOST_TEST(msg == h5 + ": damaged: image 4 of split 'train' (train/bean_rust/img_0.jpg) does not match the "
                         "checksum vit_data_prep recorded (pixels or label changed since); re-create the file with "
                         "vit_data_prep");
}

// Finding 1: damage in the JPEG storage and in a label (the accuracy a user
// reads changes with either), several at once: the first few are listed.
BOOST_AUTO_TEST_CASE(damage_in_jpeg_bytes_and_in_labels_is_located) {
  TempDir tmp("damaged_jpeg");
  make_image_tree(tmp.path() / "img", 2);
  const std::string h5 = tmp.str("data.h5");
  prep(tmp.str("img"), h5, 16, "jpeg");
  rewrite_label(h5, "validation", 1, 2);  // image 1 is angular_leaf_spot/img_1.jpg, label 0 -> 2
  // Another valid JPEG in place of test image 2: decodes fine, trains silently.
  write_jpeg(tmp.path() / "other.jpg", 16, 16, 999);
  const std::string other = read_text(tmp.path() / "other.jpg");
  rewrite_jpeg_bytes(h5, "test", 2, std::vector<unsigned char>(other.begin(), other.end()));
  const std::string msg = user_error([&] { Hdf5Dataset::open(h5).verify_checksum(); });
  BOOST_TEST(msg == h5 + ": damaged: image 1 of split 'validation' (validation/angular_leaf_spot/img_1.jpg), "
                         "image 2 of split 'test' (test/bean_rust/img_0.jpg) do not match the checksum "
                         "vit_data_prep recorded (pixels or label changed since); re-create the file with "
                         "vit_data_prep");
}

// Finding 1: files written before per-image digests existed stay readable;
// their damage can only be reported for the whole file, and says why.
BOOST_AUTO_TEST_CASE(an_older_file_without_digests_is_verified_whole) {
  TempDir tmp("old_format");
  make_image_tree(tmp.path() / "img", 2);
  const std::string h5 = tmp.str("old.h5");
  prep(tmp.str("img"), h5);
  strip_digests(h5);
  BOOST_TEST(user_error([&] { Hdf5Dataset::open(h5).verify_checksum(); }).empty());
  corrupt_raw_image(h5, "validation", 0, 100);
  const std::string msg = user_error([&] { Hdf5Dataset::open(h5).verify_checksum(); });
  BOOST_TEST(msg.rfind(h5 + ": damaged: its content checksum is ", 0) == 0u, msg);
  BOOST_TEST(contains(msg, " (the file was written by an older vit_data_prep that records no per-image checksums, "
                           "so the damaged image cannot be named); re-create it with vit_data_prep"),
             msg);
}

// Finding 8 at the data layer: a folder of images where the HDF5 file
// belongs was "no such file (make it with vit_data_prep ... --output <the
// folder>)".
BOOST_AUTO_TEST_CASE(a_folder_of_images_gets_the_command_that_packs_it) {
  TempDir tmp("folder");
  make_image_tree(tmp.path() / "beans", 1);
  const std::string folder = tmp.str("beans");
  BOOST_TEST(user_error([&] { Hdf5Dataset::open(folder); }) ==
             folder + ": is a folder of images, not an HDF5 file: pack it once with `vit_data_prep --input " + folder +
                 " --output data/beans.h5` and use the .h5 file it writes");
  fs::create_directories(tmp.path() / "empty");
  BOOST_TEST(user_error([&] { Hdf5Dataset::open(tmp.str("empty")); }) ==
             tmp.str("empty") + ": is a folder, not an HDF5 file (expected the .h5 file vit_data_prep writes)");
}

// Finding 2: a SIGKILLed run leaves its hidden temporary; nothing cleaned it.
// The next run of the same output removes those whose writer is gone (both
// name forms: with the host, and the older pid-only one) and says so; a
// temporary of another host is left alone, with a note.
BOOST_AUTO_TEST_CASE(temporaries_of_killed_runs_are_removed_by_the_next_run) {
  TempDir tmp("stale");
  make_image_tree(tmp.path() / "img", 1);
  fs::create_directories(tmp.path() / "out");
  const pid_t gone = finished_pid();
  const fs::path legacy = tmp.path() / "out" / (".data.h5.tmp-" + std::to_string(gone));
  const fs::path with_host = tmp.path() / "out" / (".data.h5.tmp-" + host_name() + "-" + std::to_string(gone));
  const fs::path elsewhere = tmp.path() / "out" / (".data.h5.tmp-some-other-node-" + std::to_string(gone));
  for (const auto& p : {legacy, with_host, elsewhere}) write_text(p, std::string(65536, 'x'));
  const std::string out = tmp.str("out/data.h5");
  const Result r = shell(kDataPrep + " --input " + tmp.str("img") + " --output " + out + " --image-size 16 --quiet");
  BOOST_TEST(r.status == 0, r.output);
  for (const auto& p : {legacy, with_host}) {
    BOOST_TEST(!fs::exists(p));
    BOOST_TEST(count(r.output, "vit_data_prep: note: removed " + p.string() +
                                   ", a temporary file left by an interrupted run (pid " + std::to_string(gone) +
                                   ", no longer running)\n") == 1u,
               r.output);
  }
  BOOST_TEST(fs::exists(elsewhere));
  BOOST_TEST(contains(r.output, elsewhere.string() + ": a temporary file of " + out +
                                    " from host some-other-node (pid " + std::to_string(gone) + ") is left alone"),
             r.output);
  BOOST_TEST(fs::exists(out));
}

// Finding 2: a temporary that a running vit_data_prep is still writing is
// not touched; the second run stops instead of racing it for the output.
BOOST_AUTO_TEST_CASE(a_temporary_that_is_being_written_is_not_taken) {
  TempDir tmp("live");
  make_image_tree(tmp.path() / "img", 1);
  // A process whose name is vit_data_prep: a copy of sleep.
  fs::copy_file("/bin/sleep", tmp.path() / "vit_data_prep");
  const pid_t writer = ::fork();
  if (writer == 0) {
    const std::string prog = tmp.str("vit_data_prep");
    ::execl(prog.c_str(), "vit_data_prep", "30", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::usleep(200 * 1000);  // let exec() finish, so /proc shows the new name
  const fs::path temp = tmp.path() / (".data.h5.tmp-" + host_name() + "-" + std::to_string(writer));
  write_text(temp, "partial");
  const std::string out = tmp.str("data.h5");
  const Result r = shell(kDataPrep + " --input " + tmp.str("img") + " --output " + out + " --image-size 16 --quiet");
  ::kill(writer, SIGKILL);
  ::waitpid(writer, nullptr, 0);
  BOOST_TEST(r.status == 1, r.output);
  BOOST_TEST(r.output == "vit_data_prep: error: " + out + ": another vit_data_prep (pid " + std::to_string(writer) +
                             ") is writing it right now (" + temp.string() +
                             "); wait for it to finish or choose another --output\n");
  BOOST_TEST(fs::exists(temp));
  BOOST_TEST(!fs::exists(out));
}

// Finding 2: an output inside the input tree was accepted (the file and its
// temporary among the images it reads).
BOOST_AUTO_TEST_CASE(an_output_inside_the_input_is_refused) {
  TempDir tmp("inside");
  make_image_tree(tmp.path() / "img", 1);
  for (const std::string out : {tmp.str("img/data.h5"), tmp.str("img/train/healthy/data.h5")}) {
    const Result r = shell(kDataPrep + " --input " + tmp.str("img") + " --output " + out + " --quiet");
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output == "vit_data_prep: error: " + out + ": inside the input folder " + tmp.str("img") +
                               " (vit_data_prep would write among the images it reads); write it outside, e.g. "
                               "--output data/data.h5\n");
    BOOST_TEST(!fs::exists(out));
  }
  // Only the images are there: no temporary was left.
  size_t entries = 0;
  for (const auto& e : fs::recursive_directory_iterator(tmp.path() / "img")) entries += e.is_regular_file();
  BOOST_TEST(entries == 9u);
}

// Finding 2: a 1 x 1 image was upscaled silently; a 20000 x 20000 one would
// be decoded into 1.2 GB per thread. Now: a note naming the small one, and
// the huge one refused by name before any pixel is allocated (the header is
// forged: the file holds 24 x 24 pixels but says 20000 x 20000).
BOOST_AUTO_TEST_CASE(image_sizes_far_from_the_output_are_noted_and_huge_ones_refused) {
  TempDir tmp("sizes");
  make_image_tree(tmp.path() / "img", 1);
  const fs::path tiny = tmp.path() / "img" / "train" / "healthy" / "tiny.jpg";
  write_jpeg(tiny, 1, 1, 7);
  const Result noted =
      shell(kDataPrep + " --input " + tmp.str("img") + " --output " + tmp.str("a.h5") + " --image-size 16 --quiet");
  BOOST_TEST(noted.status == 0, noted.output);
  BOOST_TEST(noted.output == "vit_data_prep: note: " + tiny.string() +
                                 ": 1 x 1 pixels, far from the 16 x 16 output (upscaled more than 4x: it will be "
                                 "blurry)\n");

  fs::remove(tiny);
  const fs::path huge = tmp.path() / "img" / "validation" / "bean_rust" / "huge.jpg";
  write_jpeg(huge, 24, 24, 8);
  std::string bytes = read_text(huge);
  const size_t sof = bytes.find("\xff\xc0");  // baseline start of frame: FF C0, length, precision, height, width
  BOOST_REQUIRE(sof != std::string::npos);
  for (const size_t at : {sof + 5, sof + 7}) {  // height, width: 20000 = 0x4E20, big-endian
    bytes[at] = '\x4e';
    bytes[at + 1] = '\x20';
  }
  write_text(huge, bytes);
  const Result refused =
      shell(kDataPrep + " --input " + tmp.str("img") + " --output " + tmp.str("b.h5") + " --image-size 16 --quiet");
  BOOST_TEST(refused.status == 1, refused.output);
  BOOST_TEST(refused.output == "vit_data_prep: error: " + huge.string() +
                                   ": 20000 x 20000 pixels is above vit_data_prep's limit of 100 megapixels per "
                                   "image (decoded it would take 1200 MB); shrink it or leave it out\n");
  BOOST_TEST(!fs::exists(tmp.str("b.h5")));
}
