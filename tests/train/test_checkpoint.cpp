// safetensors reading/writing and the Hugging Face ViT mapping, on the CPU:
// the bytes and the transformers names, shapes and element order checked
// against the formats themselves (written by hand here), round trips, the
// re-initialised head, and every kind of damaged file refused with the file
// named.
#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
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

BOOST_AUTO_TEST_CASE(safetensors_written_bytes_follow_the_format) {
  // The writer checked against the format itself, not through our reader
  // (a bug shared by both would survive a round trip): an 8-byte
  // little-endian header length N, N bytes of JSON, then each tensor's
  // little-endian fp32 bytes at its [begin, end) offsets into the data.
  const std::string bytes = slurp(write_sample("format.safetensors"));
  BOOST_TEST_REQUIRE(bytes.size() >= 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  BOOST_TEST_REQUIRE(8 + n + 4 * (6 + 4) == bytes.size());  // the header, then 6 + 4 floats and nothing more
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  BOOST_TEST(header["__metadata__"]["format"] == "pt");
  BOOST_TEST(header["a"]["dtype"] == "F32");
  BOOST_TEST(header["a"]["shape"] == nlohmann::json::parse("[2, 3]"));
  BOOST_TEST(header["b"]["shape"] == nlohmann::json::parse("[4]"));
  auto values_of = [&](const char* name) {
    const auto begin = header[name]["data_offsets"][0].get<size_t>(), end = header[name]["data_offsets"][1].get<size_t>();
    std::vector<float> v;
    for (size_t at = begin; at < end; at += 4) {
      uint32_t bits = 0;
      for (int i = 3; i >= 0; --i) bits = (bits << 8) | static_cast<unsigned char>(bytes[8 + n + at + static_cast<size_t>(i)]);
      float f;
      std::memcpy(&f, &bits, 4);
      v.push_back(f);
    }
    return v;
  };
  BOOST_TEST(values_of("a") == (std::vector<float>{1, 2, 3, 4, 5, 6}));
  BOOST_TEST(values_of("b") == (std::vector<float>{-1, -2, -3, -4}));
}

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

namespace {

// Every parameter of `layout` filled with values that say where they live:
// 10000 * (parameter index + 1) + element index, exact in fp32 for these
// sizes (< 2^24), all distinct.
std::vector<float> coded_params(const model::ParamLayout& layout) {
  std::vector<float> p(static_cast<size_t>(layout.total()));
  for (size_t k = 0; k < layout.params().size(); ++k) {
    const auto& info = layout.params()[k];
    for (int64_t j = 0; j < info.numel; ++j) p[info.offset + j] = static_cast<float>(10000 * (k + 1) + j);
  }
  return p;
}

// The value coded_params put at element j of our parameter `name`.
float code(const model::ParamLayout& layout, const std::string& name, int64_t j) {
  const int k = layout.index_of(name);
  BOOST_TEST_REQUIRE(j < layout[k].numel);
  return static_cast<float>(10000 * (k + 1) + j);
}

}  // namespace

BOOST_AUTO_TEST_CASE(export_writes_the_transformers_names_shapes_and_element_order) {
  // Expectations written by hand from transformers' ViTForImageClassification
  // (torch Linear weights are (out, in), the patch Conv2d weight is
  // (C, 3, ps, ps), query/key/value are separate) and our layout (fused qkv
  // rows [q; k; v], patch columns in (channel, ky, kx) order), not from the
  // mapping code under test.
  const model::ViTConfig cfg = small_vit(3);
  const int64_t C = cfg.hidden, F = cfg.mlp_dim, ps = cfg.patch_size, T = cfg.tokens();
  model::ParamLayout layout(cfg);
  const std::vector<float> params = coded_params(layout);
  const std::string dir = scratch() + "/export_layout";
  train::export_hf_vit(dir, cfg, params, {"a", "b", "c"});
  const auto st = io::read_safetensors(dir + "/model.safetensors");
  // 4 embedding tensors, 16 per layer, the final norm's 2, the classifier's 2.
  BOOST_TEST(st.tensors.size() == static_cast<size_t>(4 + 16 * cfg.depth + 2 + 2));

  auto check = [&](const std::string& hf, const std::vector<int64_t>& shape, const std::string& ours,
                   const std::function<int64_t(int64_t)>& element_of) {
    BOOST_TEST_CONTEXT(hf) {
      const auto it = st.tensors.find(hf);
      BOOST_TEST_REQUIRE((it != st.tensors.end()), "missing");
      BOOST_TEST(it->second.shape == shape);
      const std::vector<float> v = it->second.to_float();
      int64_t wrong = 0;
      for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i) wrong += v[i] != code(layout, ours, element_of(i));
      BOOST_TEST(wrong == 0);
    }
  };
  const auto same = [](int64_t i) { return i; };
  check("vit.embeddings.cls_token", {1, 1, C}, "cls_token", same);
  check("vit.embeddings.position_embeddings", {1, T, C}, "pos_embed", same);
  check("vit.embeddings.patch_embeddings.projection.bias", {C}, "patch_embed.bias", same);
  // Conv2d weight [o][ch][ky][kx] = our patch_embed.weight row o, column ch*ps*ps + ky*ps + kx.
  check("vit.embeddings.patch_embeddings.projection.weight", {C, 3, ps, ps}, "patch_embed.weight", [&](int64_t i) {
    const int64_t o = i / (3 * ps * ps), ch = i / (ps * ps) % 3, ky = i / ps % ps, kx = i % ps;
    return o * cfg.patch_dim() + ch * ps * ps + ky * ps + kx;
  });
  for (int l = 0; l < cfg.depth; ++l) {
    const std::string hf = "vit.encoder.layer." + std::to_string(l) + ".", ours = "blocks." + std::to_string(l) + ".";
    check(hf + "layernorm_before.weight", {C}, ours + "ln1.weight", same);
    check(hf + "layernorm_before.bias", {C}, ours + "ln1.bias", same);
    check(hf + "layernorm_after.weight", {C}, ours + "ln2.weight", same);
    check(hf + "layernorm_after.bias", {C}, ours + "ln2.bias", same);
    const char* parts[3] = {"query", "key", "value"};
    for (int64_t k = 0; k < 3; ++k) {
      // Row r of query/key/value is row k*C + r of the fused weight.
      check(hf + "attention.attention." + parts[k] + ".weight", {C, C}, ours + "attn.qkv.weight",
            [&](int64_t i) { return (k * C + i / C) * C + i % C; });
      check(hf + "attention.attention." + parts[k] + ".bias", {C}, ours + "attn.qkv.bias",
            [&](int64_t i) { return k * C + i; });
    }
    check(hf + "attention.output.dense.weight", {C, C}, ours + "attn.proj.weight", same);
    check(hf + "attention.output.dense.bias", {C}, ours + "attn.proj.bias", same);
    check(hf + "intermediate.dense.weight", {F, C}, ours + "mlp.fc1.weight", same);
    check(hf + "intermediate.dense.bias", {F}, ours + "mlp.fc1.bias", same);
    check(hf + "output.dense.weight", {C, F}, ours + "mlp.fc2.weight", same);
    check(hf + "output.dense.bias", {C}, ours + "mlp.fc2.bias", same);
  }
  check("vit.layernorm.weight", {C}, "norm.weight", same);
  check("vit.layernorm.bias", {C}, "norm.bias", same);
  check("classifier.weight", {3, C}, "head.weight", same);
  check("classifier.bias", {3}, "head.bias", same);

  // config.json as transformers reads it.
  std::ifstream in(dir + "/config.json");
  const nlohmann::json config = nlohmann::json::parse(in);
  BOOST_TEST(config["model_type"] == "vit");
  BOOST_TEST(config["hidden_size"] == C);
  BOOST_TEST(config["num_hidden_layers"] == cfg.depth);
  BOOST_TEST(config["num_attention_heads"] == cfg.heads);
  BOOST_TEST(config["intermediate_size"] == F);
  BOOST_TEST(config["image_size"] == cfg.image_size);
  BOOST_TEST(config["patch_size"] == ps);
  BOOST_TEST(config["id2label"]["1"] == "b");
  BOOST_TEST(config["label2id"]["c"] == 2);
}

BOOST_AUTO_TEST_CASE(export_then_import_gives_the_same_weights) {
  // With the export checked against hand-written expectations above, an
  // import that returns every one of these all-distinct values to its place
  // is the inverse of a correct export.
  const model::ViTConfig cfg = small_vit(3);
  model::ParamLayout layout(cfg);
  const std::vector<float> params = coded_params(layout);
  const std::string dir = scratch() + "/export";
  train::export_hf_vit(dir, cfg, params, {"a", "b", "c"});
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
  // Wide enough (hidden 64, 40 labels: 2560 head weights) for the new head's
  // statistics to mean something.
  model::ViTConfig cfg3 = small_vit(3);
  cfg3.hidden = 64;
  cfg3.depth = 1;
  model::ViTConfig cfg40 = cfg3;
  cfg40.num_classes = 40;
  model::ParamLayout l3(cfg3), l40(cfg40);
  std::vector<float> params(static_cast<size_t>(l3.total()));
  model::init_params(l3, 0.5f, 4, params.data());
  for (size_t i = 0; i < params.size(); ++i) params[i] += 1e-3f * static_cast<float>(i % 89);  // biases too
  const std::string dir = scratch() + "/head";
  train::export_hf_vit(dir, cfg3, params, {});
  const train::HfImport imported = train::load_hf_vit(dir, cfg40, 7);
  BOOST_TEST(imported.head_reinitialised);
  BOOST_TEST(imported.note.find("re-initialised") != std::string::npos, imported.note);
  BOOST_TEST_REQUIRE(imported.params.size() == static_cast<size_t>(l40.total()));

  // Everything but the classifier came from the file, bit for bit (the final
  // LayerNorm included, which sits in the head range).
  const auto& hw = l40[l40.head_w];
  const auto& hb = l40[l40.head_b];
  BOOST_TEST_REQUIRE(hw.offset == l3[l3.head_w].offset);
  BOOST_TEST(std::equal(params.begin(), params.begin() + hw.offset, imported.params.begin()));

  // The new classifier: zero bias; weights a fresh truncated normal of
  // std init_std (0.02) cut at 2 std, drawn with the given seed.
  for (int64_t i = 0; i < hb.numel; ++i) BOOST_TEST_REQUIRE(imported.params[hb.offset + i] == 0.0f);
  const std::vector<float> w(imported.params.begin() + hw.offset, imported.params.begin() + hw.offset + hw.numel);
  const double sd_init = cfg40.init_std;
  double sum = 0, sum2 = 0, largest = 0;
  for (float x : w) {
    sum += x;
    sum2 += double(x) * x;
    largest = std::max(largest, std::abs(double(x)));
  }
  const double n = static_cast<double>(w.size()), mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
  BOOST_TEST_MESSAGE("new head: mean " << mean << " std " << sd << " max |w| " << largest);
  BOOST_TEST(largest <= 2 * sd_init);
  // A normal truncated at +-2 sigma has std 0.880 sigma; with 2560 samples
  // the sample std is within 1.4% (one sd): 5% is 3.5 sd. The mean of
  // 2560 samples of std 0.0176 has sd 3.5e-4: 1.5e-3 is over 4 sd.
  BOOST_TEST(std::abs(sd - 0.880 * sd_init) <= 0.05 * 0.880 * sd_init);
  BOOST_TEST(std::abs(mean) <= 1.5e-3);
  // Not the file's classifier (std 0.5): no value of the new head occurs in it.
  const auto& old_head = l3[l3.head_w];
  const std::vector<float> old(params.begin() + old_head.offset, params.begin() + old_head.offset + old_head.numel);
  int shared = 0;
  for (float x : w) shared += std::find(old.begin(), old.end(), x) != old.end();
  BOOST_TEST(shared == 0);
  // Drawn with this seed: it is the published initialisation of seed 7 and
  // not that of seed 8.
  std::vector<float> seed7(static_cast<size_t>(l40.total())), seed8(seed7.size());
  model::init_params(l40, cfg40.init_std, 7, seed7.data());
  model::init_params(l40, cfg40.init_std, 8, seed8.data());
  BOOST_TEST(std::equal(w.begin(), w.end(), seed7.begin() + hw.offset));
  BOOST_TEST(!std::equal(w.begin(), w.end(), seed8.begin() + hw.offset));
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
