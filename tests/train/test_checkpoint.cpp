// safetensors reading/writing and the Hugging Face ViT mapping, on the CPU:
// round trips, the re-initialised head, and every kind of damaged file
// refused with the file named.
#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "train/hf_checkpoint.h"

namespace fs = std::filesystem;
using namespace vit;

namespace {

std::string scratch() {
  static std::string dir = [] {
    std::string d = std::string(VIT_BINARY_DIR) + "/checkpoint_scratch_" + std::to_string(::getpid());
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

model::ViTConfig small_vit(int classes) {
  model::ViTConfig c;
  c.image_size = 16;
  c.patch_size = 8;
  c.hidden = 8;
  c.depth = 2;
  c.heads = 2;
  c.mlp_dim = 16;
  c.num_classes = classes;
  return c;
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

// A valid two-tensor file to damage.
std::string write_sample(const std::string& name) {
  std::map<std::string, io::Fp32Tensor> t;
  t["a"] = {{2, 3}, {1, 2, 3, 4, 5, 6}};
  t["b"] = {{4}, {-1, -2, -3, -4}};
  const std::string path = scratch() + "/" + name;
  io::write_safetensors(path, t, {{"format", "pt"}});
  return path;
}

void expect_refused(const std::string& path, const std::string& fragment) {
  try {
    io::read_safetensors(path);
    BOOST_ERROR("accepted a damaged file: " << fragment);
  } catch (const UserError& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find(path) != std::string::npos, what);
    BOOST_TEST(what.find(fragment) != std::string::npos, what);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(safetensors_round_trip) {
  const std::string path = write_sample("ok.safetensors");
  const io::SafeTensorsFile f = io::read_safetensors(path);
  BOOST_TEST(f.tensors.size() == 2u);
  BOOST_TEST(f.metadata.at("format") == "pt");
  BOOST_TEST(f.tensors.at("a").shape == (std::vector<int64_t>{2, 3}));
  BOOST_TEST(f.tensors.at("a").to_float() == (std::vector<float>{1, 2, 3, 4, 5, 6}));
  BOOST_TEST(f.tensors.at("b").to_float() == (std::vector<float>{-1, -2, -3, -4}));
}

BOOST_AUTO_TEST_CASE(bf16_and_fp16_tensors_are_read) {
  // Hand-built header: "h" F16 [2] = {1.0, -2.0}, "g" BF16 [1] = {0.5}.
  const std::string header = R"({"g":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]},)"
                             R"("h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  const uint16_t h[2] = {0x3c00, 0xc000}, g = 0x3f00;
  bytes.append(reinterpret_cast<const char*>(h), 4);
  bytes.append(reinterpret_cast<const char*>(&g), 2);
  const std::string path = scratch() + "/half.safetensors";
  spit(path, bytes);
  const auto f = io::read_safetensors(path);
  BOOST_TEST(f.tensors.at("h").to_float() == (std::vector<float>{1.0f, -2.0f}));
  BOOST_TEST(f.tensors.at("g").to_float() == (std::vector<float>{0.5f}));
}

BOOST_AUTO_TEST_CASE(damaged_files_are_refused_with_their_name) {
  const std::string good = slurp(write_sample("good.safetensors"));
  const std::string dir = scratch();

  spit(dir + "/truncated.safetensors", good.substr(0, good.size() - 4));
  expect_refused(dir + "/truncated.safetensors", "truncated");

  std::string trailing = good + "xxxx";
  spit(dir + "/trailing.safetensors", trailing);
  expect_refused(dir + "/trailing.safetensors", "after the last tensor");

  std::string huge = good;
  const uint64_t big = 1ull << 40;
  std::memcpy(huge.data(), &big, 8);
  spit(dir + "/header_len.safetensors", huge);
  expect_refused(dir + "/header_len.safetensors", "header length");

  std::string notjson = good;
  notjson[8] = '[';
  notjson[9] = '[';
  spit(dir + "/notjson.safetensors", notjson);
  expect_refused(dir + "/notjson.safetensors", "JSON");

  std::string dtype = good;
  dtype.replace(dtype.find("F32"), 3, "I64");
  spit(dir + "/dtype.safetensors", dtype);
  expect_refused(dir + "/dtype.safetensors", "dtype I64");

  spit(dir + "/short.safetensors", "abc");
  expect_refused(dir + "/short.safetensors", "too short");
  BOOST_CHECK_THROW(io::read_safetensors(dir + "/missing.safetensors"), UserError);
}

BOOST_AUTO_TEST_CASE(export_then_import_gives_the_same_weights) {
  const model::ViTConfig cfg = small_vit(3);
  model::ParamLayout layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.5f, 3, params.data());
  for (size_t i = 0; i < params.size(); ++i) params[i] += 0.001f * static_cast<float>(i % 97);
  const std::string dir = scratch() + "/export";
  train::export_hf_vit(dir, cfg, params, {"a", "b", "c"});
  // The transformers names and shapes, with q/k/v split out of our fused qkv.
  const auto st = io::read_safetensors(dir + "/model.safetensors");
  BOOST_TEST(st.tensors.at("vit.encoder.layer.1.attention.attention.key.weight").shape ==
             (std::vector<int64_t>{8, 8}));
  BOOST_TEST(st.tensors.at("vit.embeddings.patch_embeddings.projection.weight").shape ==
             (std::vector<int64_t>{8, 3, 8, 8}));
  BOOST_TEST(st.tensors.at("vit.embeddings.position_embeddings").shape == (std::vector<int64_t>{1, 5, 8}));
  BOOST_TEST(st.tensors.at("classifier.weight").shape == (std::vector<int64_t>{3, 8}));
  std::vector<std::string> names;
  const model::ViTConfig back = train::read_hf_config(dir, &names);
  BOOST_TEST(back.hidden == 8);
  BOOST_TEST(back.depth == 2);
  BOOST_TEST(back.num_classes == 3);
  BOOST_TEST(names == (std::vector<std::string>{"a", "b", "c"}));
  const train::HfImport imported = train::load_hf_vit(dir, cfg, 99);
  BOOST_TEST(!imported.head_reinitialised);
  BOOST_TEST(imported.params == params);  // bit for bit
}

BOOST_AUTO_TEST_CASE(another_label_count_reinitialises_the_head_and_says_so) {
  const model::ViTConfig cfg3 = small_vit(3), cfg5 = small_vit(5);
  model::ParamLayout l3(cfg3), l5(cfg5);
  std::vector<float> params(static_cast<size_t>(l3.total()));
  model::init_params(l3, 0.5f, 4, params.data());
  const std::string dir = scratch() + "/head";
  train::export_hf_vit(dir, cfg3, params, {});
  const train::HfImport imported = train::load_hf_vit(dir, cfg5, 7);
  BOOST_TEST(imported.head_reinitialised);
  BOOST_TEST(imported.note.find("re-initialised") != std::string::npos, imported.note);
  // Everything but the head came from the file.
  const auto [b, e] = l3.head_range();
  (void)e;
  const int64_t norm_end = l3[l3.norm_b].offset + l3[l3.norm_b].numel;
  BOOST_TEST(norm_end <= b + 2 * cfg3.hidden);
  for (int64_t i = 0; i < norm_end; ++i) BOOST_TEST_REQUIRE(imported.params[i] == params[i]);
  // The new head is the published init for seed 7 (zero bias).
  const auto& hb = l5[l5.head_b];
  for (int64_t i = 0; i < hb.numel; ++i) BOOST_TEST(imported.params[hb.offset + i] == 0.0f);
}

BOOST_AUTO_TEST_CASE(a_checkpoint_of_another_size_is_refused) {
  const model::ViTConfig cfg = small_vit(3);
  model::ParamLayout layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total()), 0.1f);
  const std::string dir = scratch() + "/size";
  train::export_hf_vit(dir, cfg, params, {});
  model::ViTConfig deeper = cfg;
  deeper.depth = 3;
  try {
    train::load_hf_vit(dir, deeper, 1);
    BOOST_ERROR("a 2-layer checkpoint loaded into a 3-layer model");
  } catch (const UserError& e) {
    BOOST_TEST(std::string(e.what()).find("num_hidden_layers is 2") != std::string::npos, e.what());
  }
}
