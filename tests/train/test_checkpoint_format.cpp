// The training-state checkpoint format (docs/checkpoints.md) on the CPU, one
// process: the frozen version-1 and version-2 fixtures
// (tests/train/fixtures/checkpoint_v1, _v2) read by today's code and checked against what its own run exported by
// another path; reads that span shard files; the CRC-32 against zlib's
// reference value; every kind of damage refused with the file named; a
// newer format version refused by name; the `latest` pointer and its
// fallback; `vit_hpc export --checkpoint`.
#define BOOST_TEST_MODULE checkpoint_format
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/crc32.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/hf_checkpoint.h"

namespace fs = std::filesystem;
using namespace vit;
using parallel::StatePart;
using parallel::TensorRun;

namespace {

const fs::path kFixture = fs::path(VIT_SOURCE_DIR) / "tests/train/fixtures/checkpoint_v1";
const fs::path kStep = kFixture / "checkpoints/step_000004";

fs::path scratch() {
  static fs::path dir = [] {
    fs::path d = fs::path(VIT_BINARY_DIR) / ("checkpoint_format_scratch_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

struct RemoveScratch {
  ~RemoveScratch() {
    std::error_code ec;
    fs::remove_all(scratch(), ec);
  }
};
BOOST_TEST_GLOBAL_FIXTURE(RemoveScratch);

// A private copy of the fixture checkpoint to damage.
fs::path copy_of_fixture(const std::string& name) {
  const fs::path dst = scratch() / name;
  fs::remove_all(dst);
  fs::copy(kFixture / "checkpoints", dst, fs::copy_options::recursive);
  return dst;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

template <typename F>
void expect_user_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    BOOST_ERROR("accepted: expected an error naming " << fragments.front());
  } catch (const UserError& e) {
    const std::string what = e.what();
    for (const auto& frag : fragments) BOOST_TEST(what.find(frag) != std::string::npos, what);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(crc32_is_zlibs) {
  // The check value of CRC-32/ISO-HDLC (zlib.crc32(b"123456789")), and the
  // same over odd split points (slicing-by-8 with a byte-wise tail).
  const std::string s = "123456789";
  BOOST_TEST(io::crc32_hex(io::crc32_update(0, s.data(), s.size())) == "cbf43926");
  const uint32_t parts = io::crc32_update(io::crc32_update(0, s.data(), 5), s.data() + 5, 4);
  BOOST_TEST(io::crc32_hex(parts) == "cbf43926");
  BOOST_TEST(io::crc32_update(0, "", 0) == 0u);
  // 1 MiB of a pattern: zlib.crc32(bytes(i * 7 % 251 for i in range(1 << 20))) == 0xf1eed7ff
  std::vector<unsigned char> big(1 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<unsigned char>(i * 7 % 251);
  BOOST_TEST(io::crc32_hex(io::crc32_update(0, big.data(), big.size())) == "f1eed7ff");
}

BOOST_AUTO_TEST_CASE(version_1_fixture_reads_as_written) {
  train::CheckpointReader r(kFixture / "checkpoints");  // the root: its `latest`
  BOOST_TEST(r.dir() == (kFixture / "checkpoints/step_000004").string());
  BOOST_TEST(r.format_version() == 1);
  BOOST_TEST(r.step() == 4);
  BOOST_TEST(r.shard_count() == 2);
  r.verify_shards(0, 1);
  const train::TrainState& st = r.state();
  // What the README says the run was.
  BOOST_TEST(st.adam_step == 5);
  BOOST_TEST(st.epoch == 2);
  BOOST_TEST(st.step_in_epoch == 0);
  BOOST_TEST(st.total_steps == 4);
  BOOST_TEST(st.steps_per_epoch == 64);
  BOOST_TEST(st.schedule == "cosine");
  BOOST_TEST(st.seed == 42u);
  BOOST_TEST(st.scaler.scale == 1.0);
  BOOST_TEST(st.layout["plugin"] == "torch_ddp");
  BOOST_TEST(st.layout["world_size"] == 2);
  BOOST_TEST(st.layout["global_batch"] == 16);
  BOOST_TEST(st.metrics_bytes.size() == 2u);
  BOOST_TEST(st.model.hidden == 4);
  BOOST_TEST(st.model.depth == 1);
  BOOST_TEST(st.model.patch_size == 16);
  BOOST_TEST(st.class_names == (std::vector<std::string>{"angular_leaf_spot", "bean_rust", "healthy"}));
  BOOST_TEST(st.spec["train"]["steps"] == 4);

  // The master weights equal the run's own Hugging Face export (written
  // from gather_params, not from the checkpoint writer), bit for bit; the
  // moments are those of 4 AdamW steps: finite, v >= 0, not all zero.
  const model::ParamLayout layout(st.model);
  r.check_matches(layout);
  const train::HfImport exported = train::load_hf_vit((kFixture / "export").string(), st.model, 0);
  BOOST_TEST_REQUIRE(!exported.head_reinitialised);
  size_t compared = 0;
  for (const model::ParamInfo& p : layout.params()) {
    const std::vector<float> master = r.read_tensor(StatePart::Master, p.name);
    BOOST_TEST_REQUIRE(master.size() == static_cast<size_t>(p.numel));
    BOOST_TEST(std::memcmp(master.data(), exported.params.data() + p.offset, master.size() * 4) == 0, p.name);
    const std::vector<float> m = r.read_tensor(StatePart::AdamM, p.name), v = r.read_tensor(StatePart::AdamV, p.name);
    bool finite = true, v_nonneg = true, m_nonzero = false;
    for (size_t i = 0; i < m.size(); ++i) {
      finite = finite && std::isfinite(m[i]) && std::isfinite(v[i]);
      v_nonneg = v_nonneg && v[i] >= 0.0f;
      m_nonzero = m_nonzero || m[i] != 0.0f;
    }
    BOOST_TEST(finite, p.name);
    BOOST_TEST(v_nonneg, p.name);
    BOOST_TEST(m_nonzero, p.name);
    compared += master.size();
  }
  BOOST_TEST(compared == 3343u);
  // Version 1 knows no average and no best state.
  BOOST_TEST(!r.has_part(StatePart::Ema));
  BOOST_TEST(!st.keep_best);
}

BOOST_AUTO_TEST_CASE(version_2_fixture_reads_as_written) {
  const fs::path fx = fs::path(VIT_SOURCE_DIR) / "tests/train/fixtures/checkpoint_v2";
  train::CheckpointReader r(fx / "checkpoints");
  BOOST_TEST(r.format_version() == 2);
  BOOST_TEST(r.step() == 4);
  BOOST_TEST(r.shard_count() == 2);  // best_weights.safetensors is not a shard
  r.verify_shards(0, 1);
  BOOST_TEST(r.has_part(StatePart::Ema));
  const train::TrainState& st = r.state();
  BOOST_TEST(st.keep_best);
  BOOST_TEST(st.best_epoch == 1);
  BOOST_TEST(st.best_accuracy > 0.0);
  BOOST_TEST(st.spec["train"]["ema_decay"] == 0.9);
  const model::ParamLayout layout(st.model);
  r.check_matches(layout);
  // The best weights are the average evaluated after epoch 1 (its last
  // step, 4, is the checkpoint's): the ema part, bit for bit, and what the
  // run exported by another path (gather_params, keep_best). The average of
  // 4 steps at decay 0.9 is not the master weights.
  const std::vector<float> best = r.read_best_weights(layout);
  const train::HfImport exported = train::load_hf_vit((fx / "export").string(), st.model, 0);
  BOOST_TEST_REQUIRE(best.size() == exported.params.size());
  BOOST_TEST(std::memcmp(best.data(), exported.params.data(), best.size() * 4) == 0);
  bool master_differs = false;
  for (const model::ParamInfo& p : layout.params()) {
    const std::vector<float> ema = r.read_tensor(StatePart::Ema, p.name), master = r.read_tensor(StatePart::Master, p.name);
    BOOST_TEST(std::memcmp(ema.data(), best.data() + p.offset, ema.size() * 4) == 0, p.name);
    master_differs = master_differs || std::memcmp(ema.data(), master.data(), ema.size() * 4) != 0;
  }
  BOOST_TEST(master_differs);
  // A damaged best-weights file is refused by name.
  const fs::path c = scratch() / "v2_damaged";
  fs::remove_all(c);
  fs::copy(fx / "checkpoints", c, fs::copy_options::recursive);
  {
    std::fstream f(c / "step_000004" / train::kBestWeightsFile, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  train::CheckpointReader d(c.string());
  try {
    (void)d.read_best_weights(layout);
    BOOST_TEST(false, "a damaged best_weights.safetensors was read");
  } catch (const UserError& e) {
    BOOST_TEST(std::string(e.what()).find("best_weights.safetensors: CRC-32") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(reads_span_shard_files_and_read_only_what_is_asked) {
  // patch_embed.weight is split over both shards (rank 0 wrote elements
  // [0, 1728), rank 1 the rest): a run across the split is assembled from
  // both, and equals the same elements of the whole tensor.
  train::CheckpointReader r(kStep.string());
  const std::vector<float> whole = r.read_tensor(StatePart::AdamV, "patch_embed.weight");
  BOOST_TEST_REQUIRE(whole.size() == 4u * 768u);
  const uint64_t before = r.bytes_read();
  std::vector<float> part(100, NAN);
  r.read(StatePart::AdamV, TensorRun{"patch_embed.weight", 1700, 100}, part.data());
  BOOST_TEST(r.bytes_read() - before == 400u);  // exactly the 100 values
  BOOST_TEST(std::memcmp(part.data(), whole.data() + 1700, 400) == 0);
  bool spans = false;
  for (const auto& s : r.index()["tensors"][0]["slices"]) spans = spans || s["begin"] == 1728;
  BOOST_TEST(r.index()["tensors"][0]["name"] == "patch_embed.weight");
  BOOST_TEST(spans);
  expect_user_error([&] { r.read(StatePart::Master, TensorRun{"patch_embed.weight", 3000, 100}, part.data()); },
                    {"lie outside its 3072"});
  expect_user_error([&] { r.read(StatePart::Master, TensorRun{"no.such.tensor", 0, 1}, part.data()); },
                    {"no tensor 'no.such.tensor'"});
}

BOOST_AUTO_TEST_CASE(damage_is_refused_naming_the_file) {
  {  // One flipped bit in a shard: its CRC-32 differs.
    const fs::path c = copy_of_fixture("flipped");
    const fs::path shard = c / "step_000004/rank_00001.safetensors";
    std::string bytes = slurp(shard);
    bytes[bytes.size() / 2] ^= 0x10;
    spit(shard, bytes);
    train::CheckpointReader r(c.string());
    r.verify_shards(0, 2);  // rank 0's share is intact
    expect_user_error([&] { r.verify_shards(1, 2); }, {shard.string(), "CRC-32", "damaged"});
  }
  {  // A truncated shard: its size differs.
    const fs::path c = copy_of_fixture("truncated");
    const fs::path shard = c / "step_000004/rank_00000.safetensors";
    fs::resize_file(shard, 1000);
    train::CheckpointReader r(c.string());
    expect_user_error([&] { r.verify_shards(0, 1); }, {shard.string(), "1000 bytes", "truncated"});
  }
  {  // An edited train state: refused on open.
    const fs::path c = copy_of_fixture("state");
    const fs::path st = c / "step_000004/train_state.json";
    std::string text = slurp(st);
    text.replace(text.find("\"adam_step\": 5"), 14, "\"adam_step\": 6");
    spit(st, text);
    expect_user_error([&] { train::CheckpointReader r(c.string()); }, {st.string(), "CRC-32"});
  }
  {  // A format version from the future: refused by name, not misread.
    const fs::path c = copy_of_fixture("future");
    const fs::path ix = c / "step_000004/index.json";
    nlohmann::json j = nlohmann::json::parse(slurp(ix));
    j["format_version"] = train::kCheckpointFormatVersion + 1;
    spit(ix, j.dump());
    expect_user_error([&] { train::CheckpointReader r(c.string()); },
                      {ix.string(), str_cat("format version ", train::kCheckpointFormatVersion + 1), "newer vit_hpc",
                       str_cat("versions 1 to ", train::kCheckpointFormatVersion)});
  }
  {  // An index whose slices leave a gap.
    const fs::path c = copy_of_fixture("gap");
    const fs::path ix = c / "step_000004/index.json";
    nlohmann::json j = nlohmann::json::parse(slurp(ix));
    j["tensors"][0]["slices"][1]["begin"] = 1729;
    spit(ix, j.dump());
    expect_user_error([&] { train::CheckpointReader r(c.string()); }, {ix.string(), "patch_embed.weight", "gap"});
  }
  {  // Another model: the shapes are named.
    model::ViTConfig other = train::CheckpointReader(kStep.string()).state().model;
    other.mlp_dim = 16;
    train::CheckpointReader r(kStep.string());
    expect_user_error([&] { r.check_matches(model::ParamLayout(other)); },
                      {"does not fit this model", "blocks.0.mlp.fc1.weight has shape [8, 4] in the checkpoint and "
                                                  "[16, 4] in this model"});
  }
}

BOOST_AUTO_TEST_CASE(latest_pointer_and_its_fallback) {
  const fs::path c = copy_of_fixture("latest");
  BOOST_TEST(train::find_latest_checkpoint(c.string()) == (c / "step_000004").string());
  // A half-written newer folder (no index.json) is not a checkpoint.
  fs::create_directories(c / "step_000009");
  spit(c / "step_000009/rank_00000.safetensors", "partial");
  fs::create_directories(c / ".tmp.step_000010");
  BOOST_TEST(train::find_latest_checkpoint(c.string()) == (c / "step_000004").string());
  // `latest` gone, or naming an incomplete folder: the newest complete one, said so.
  fs::remove(c / "latest");
  std::string note;
  BOOST_TEST(train::find_latest_checkpoint(c.string(), &note) == (c / "step_000004").string());
  BOOST_TEST(note.find("is missing; using the newest complete one, step_000004") != std::string::npos, note);
  spit(c / "latest", "step_000009\n");
  note.clear();
  BOOST_TEST(train::find_latest_checkpoint(c.string(), &note) == (c / "step_000004").string());
  BOOST_TEST(note.find("names 'step_000009', which is not a complete checkpoint") != std::string::npos, note);
  // Nothing at all.
  BOOST_TEST(train::find_latest_checkpoint((scratch() / "nowhere").string()).empty());
  fs::create_directories(scratch() / "empty");
  BOOST_TEST(train::find_latest_checkpoint((scratch() / "empty").string()).empty());
  expect_user_error([&] { train::CheckpointReader r((scratch() / "empty").string()); }, {"holds no complete checkpoint"});
}

BOOST_AUTO_TEST_CASE(export_command_writes_the_runs_own_export) {
  // vit_hpc export --checkpoint reads the master weights back and writes the
  // same bytes as the trainer's checkpoint.export_hf at the same step.
  const fs::path out = scratch() / "exported";
  const std::string cmd = std::string(VIT_BINARY_DIR) + "/vit_hpc export --checkpoint " +
                          (kFixture / "checkpoints").string() + " --output " + out.string() + " > " +
                          (scratch() / "export.log").string() + " 2>&1";
  BOOST_TEST_REQUIRE(std::system(cmd.c_str()) == 0);
  BOOST_TEST(slurp(out / "model.safetensors") == slurp(kFixture / "export/model.safetensors"));
  BOOST_TEST(nlohmann::json::parse(slurp(out / "config.json")) ==
             nlohmann::json::parse(slurp(kFixture / "export/config.json")));
  // A damaged shard: exit status 2 and the file named.
  const fs::path c = copy_of_fixture("export_damaged");
  std::string bytes = slurp(c / "step_000004/rank_00000.safetensors");
  bytes[200] ^= 1;
  spit(c / "step_000004/rank_00000.safetensors", bytes);
  const std::string bad = std::string(VIT_BINARY_DIR) + "/vit_hpc export --checkpoint " + c.string() + " --output " +
                          (scratch() / "exported2").string() + " > " + (scratch() / "export2.log").string() + " 2>&1";
  const int rc = std::system(bad.c_str());
  BOOST_TEST(WEXITSTATUS(rc) == 2);
  const std::string log = slurp(scratch() / "export2.log");
  BOOST_TEST(log.find("rank_00000.safetensors: CRC-32") != std::string::npos, log);
  BOOST_TEST(!fs::exists(scratch() / "exported2/model.safetensors"));
}

BOOST_AUTO_TEST_CASE(export_command_chooses_the_weights_the_run_would_export) {
  // A run with the weight average and best-model selection exports the best
  // validation epoch's weights (here the average after epoch 1); so does
  // `vit_hpc export` by default (--weights auto), while --weights master
  // gives the trained weights. Asking for a part a checkpoint lacks is
  // refused with exit status 2 and the reason.
  const fs::path v2 = fs::path(VIT_SOURCE_DIR) / "tests/train/fixtures/checkpoint_v2";
  auto export_to = [&](const fs::path& ck, const std::string& name, const std::string& weights) {
    const std::string cmd = std::string(VIT_BINARY_DIR) + "/vit_hpc export --checkpoint " + (ck / "checkpoints").string() +
                            " --output " + (scratch() / name).string() + weights + " > " +
                            (scratch() / (name + ".log")).string() + " 2>&1";
    return WEXITSTATUS(std::system(cmd.c_str()));
  };
  fs::remove_all(scratch() / "v2_auto");
  fs::remove_all(scratch() / "v2_master");
  fs::remove_all(scratch() / "v2_ema");
  BOOST_TEST_REQUIRE(export_to(v2, "v2_auto", "") == 0);
  BOOST_TEST(slurp(scratch() / "v2_auto/model.safetensors") == slurp(v2 / "export/model.safetensors"));
  BOOST_TEST(slurp(scratch() / "v2_auto.log").find("the best validation epoch's weights") != std::string::npos);
  BOOST_TEST_REQUIRE(export_to(v2, "v2_ema", " --weights ema") == 0);
  BOOST_TEST(slurp(scratch() / "v2_ema/model.safetensors") == slurp(v2 / "export/model.safetensors"));
  BOOST_TEST_REQUIRE(export_to(v2, "v2_master", " --weights master") == 0);
  BOOST_TEST(slurp(scratch() / "v2_master/model.safetensors") != slurp(v2 / "export/model.safetensors"));
  // Version 1 has neither; auto means master there (the test above).
  BOOST_TEST(export_to(kFixture, "v1_ema", " --weights ema") == 2);
  BOOST_TEST(slurp(scratch() / "v1_ema.log").find("holds no weight average") != std::string::npos);
  BOOST_TEST(export_to(kFixture, "v1_best", " --weights best") == 2);
  BOOST_TEST(slurp(scratch() / "v1_best.log").find("holds no best-model weights") != std::string::npos);
  BOOST_TEST(export_to(kFixture, "v1_what", " --weights newest") == 2);
  BOOST_TEST(slurp(scratch() / "v1_what.log").find("allowed: auto, master, ema, best") != std::string::npos);
  BOOST_TEST(!fs::exists(scratch() / "v1_ema/model.safetensors"));
}
