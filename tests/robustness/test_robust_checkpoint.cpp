// Issue 9, findings 4 and 5 at the checkpoint layer: a Hugging Face
// checkpoint is refused, naming the tensor, when a weight has the right
// element count in the wrong shape (a transposed weight) or holds NaN/Inf;
// a config.json with sizes vit_hpc cannot run is a message naming the
// field, not an internal check failure. The damaged checkpoints are made
// here from a valid export of a tiny model.
#define BOOST_TEST_MODULE robust_checkpoint
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "robust_util.h"
#include "train/hf_checkpoint.h"

using namespace robust;
using namespace vit;

namespace {

model::ViTConfig tiny() {
  model::ViTConfig c;
  c.image_size = 16;
  c.patch_size = 8;
  c.hidden = 8;
  c.depth = 1;
  c.heads = 2;
  c.mlp_dim = 16;
  c.num_classes = 3;
  return c;
}

// A valid export of the tiny model in `dir`.
void export_tiny(const std::string& dir) {
  const model::ViTConfig cfg = tiny();
  model::ParamLayout layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.5f, 11, params.data());
  train::export_hf_vit(dir, cfg, params, {"a", "b", "c"});
}

// The export's tensors as fp32, to be changed and written back.
std::map<std::string, io::Fp32Tensor> tensors_of(const std::string& dir) {
  std::map<std::string, io::Fp32Tensor> out;
  for (const auto& [name, t] : io::read_safetensors(dir + "/model.safetensors").tensors) {
    out[name] = {t.shape, t.to_float()};
  }
  return out;
}

template <typename F>
std::string user_error(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// Finding 5: the element count was all that was compared, so a (16, 8)
// weight stored transposed as (8, 16) loaded as garbage.
BOOST_AUTO_TEST_CASE(a_transposed_weight_is_refused_naming_tensor_and_shapes) {
  TempDir tmp("transposed");
  const std::string dir = tmp.str("model");
  export_tiny(dir);
  BOOST_TEST(user_error([&] { train::load_hf_vit(dir, tiny(), 1); }).empty());  // intact: loads
  auto t = tensors_of(dir);
  const std::string name = "vit.encoder.layer.0.intermediate.dense.weight";
  io::Fp32Tensor& w = t.at(name);
  BOOST_REQUIRE((w.shape == std::vector<int64_t>{16, 8}));
  std::vector<float> transposed(w.values.size());
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 8; ++c) transposed[c * 16 + r] = w.values[r * 8 + c];
  }
  w = {{8, 16}, transposed};
  io::write_safetensors(dir + "/model.safetensors", t, {{"format", "pt"}});
  BOOST_TEST(user_error([&] { train::load_hf_vit(dir, tiny(), 1); }) ==
             dir + "/model.safetensors: tensor '" + name +
                 "' has shape (8, 16) but this model needs (16, 8) (the same number of values in another layout: a "
                 "transposed or reshaped weight)");
}

// Finding 5: NaN or Inf weights loaded silently and gave NaN logits and an
// "accuracy".
BOOST_AUTO_TEST_CASE(nan_and_inf_weights_are_refused_naming_the_tensor) {
  TempDir tmp("nonfinite");
  const std::string dir = tmp.str("model");
  export_tiny(dir);
  auto t = tensors_of(dir);
  const std::string proj = "vit.encoder.layer.0.attention.output.dense.weight";
  t.at(proj).values[5] = std::numeric_limits<float>::quiet_NaN();
  io::write_safetensors(dir + "/model.safetensors", t, {{"format", "pt"}});
  BOOST_TEST(user_error([&] { train::load_hf_vit(dir, tiny(), 1); }) ==
             dir + "/model.safetensors: tensor '" + proj +
                 "' holds 1 value that is not finite (the first, nan, at index 5): the checkpoint is damaged or "
                 "diverged; vit_hpc refuses to start from it");

  t.at(proj).values[5] = 0.0f;  // mended; now two infinities in the class token
  t.at("vit.embeddings.cls_token").values[2] = std::numeric_limits<float>::infinity();
  t.at("vit.embeddings.cls_token").values[6] = -std::numeric_limits<float>::infinity();
  io::write_safetensors(dir + "/model.safetensors", t, {{"format", "pt"}});
  BOOST_TEST(user_error([&] { train::load_hf_vit(dir, tiny(), 1); }) ==
             dir + "/model.safetensors: tensor 'vit.embeddings.cls_token' holds 2 values that are not finite (the "
                   "first, inf, at index 2): the checkpoint is damaged or diverged; vit_hpc refuses to start from it");
}

// Finding 4: num_attention_heads 3 with hidden_size 8 reached the model code
// and ended as "src/model/params.cpp:12: check failed"; a string where a
// number belongs ended as a JSON library exception.
BOOST_AUTO_TEST_CASE(config_json_sizes_vit_hpc_cannot_run_are_user_errors) {
  TempDir tmp("config");
  const std::string dir = tmp.str("model");
  export_tiny(dir);
  const std::string config = dir + "/config.json";
  const nlohmann::json good = nlohmann::json::parse(read_text(config));
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = good;
    j[key] = value;
    write_text(config, j.dump(2));
    return user_error([&] { train::read_hf_config(dir); });
  };
  BOOST_TEST(with("num_attention_heads", 3) ==
             config + ": num_attention_heads 3 does not divide hidden_size 8 (allowed: a divisor of hidden_size, so "
                      "that every head has the same size)");
  BOOST_TEST(with("patch_size", 5) ==
             config + ": patch_size 5 does not divide image_size 16 (allowed: a divisor of image_size)");
  BOOST_TEST(with("num_hidden_layers", 0) == config + ": num_hidden_layers is 0 (allowed: >= 1)");
  BOOST_TEST(with("layer_norm_eps", "tiny") == config + ": layer_norm_eps must be a number, got \"tiny\"");
  BOOST_TEST(with("qkv_bias", "yes") == config + ": qkv_bias is \"yes\" (vit_hpc supports true only)");
}
