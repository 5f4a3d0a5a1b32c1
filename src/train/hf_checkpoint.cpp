#include "train/hf_checkpoint.h"

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/metrics.h"
#include "io/safetensors.h"
#include "model/params.h"

namespace vit::train {

namespace {

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

struct Paths {
  std::string config, weights;
};

Paths locate(const std::string& path) {
  if (is_dir(path)) return {path + "/config.json", path + "/model.safetensors"};
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  return {dir + "/config.json", path};
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError(str_cat(path, ": cannot open (a Hugging Face checkpoint needs config.json)"));
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw UserError(str_cat(path, ": not valid JSON (", e.what(), ")"));
  }
}

int get_int(const nlohmann::json& j, const std::string& key, int fallback, const std::string& file) {
  if (!j.contains(key)) return fallback;
  VIT_USER_CHECK(j[key].is_number_integer(), file, ": ", key, " must be an integer");
  return j[key].get<int>();
}

// HF name for each of our parameters; qkv maps to three names.
std::string hf_name(const std::string& prefix, const std::string& ours) {
  static const std::map<std::string, std::string> fixed = {
      {"patch_embed.weight", "embeddings.patch_embeddings.projection.weight"},
      {"patch_embed.bias", "embeddings.patch_embeddings.projection.bias"},
      {"cls_token", "embeddings.cls_token"},
      {"pos_embed", "embeddings.position_embeddings"},
      {"norm.weight", "layernorm.weight"},
      {"norm.bias", "layernorm.bias"}};
  if (ours == "head.weight") return "classifier.weight";
  if (ours == "head.bias") return "classifier.bias";
  if (auto it = fixed.find(ours); it != fixed.end()) return prefix + it->second;
  // blocks.<i>.<rest>
  const size_t dot = ours.find('.', 7);
  const std::string layer = ours.substr(7, dot - 7);
  const std::string rest = ours.substr(dot + 1);
  static const std::map<std::string, std::string> block = {
      {"ln1.weight", "layernorm_before.weight"},      {"ln1.bias", "layernorm_before.bias"},
      {"attn.proj.weight", "attention.output.dense.weight"}, {"attn.proj.bias", "attention.output.dense.bias"},
      {"ln2.weight", "layernorm_after.weight"},       {"ln2.bias", "layernorm_after.bias"},
      {"mlp.fc1.weight", "intermediate.dense.weight"}, {"mlp.fc1.bias", "intermediate.dense.bias"},
      {"mlp.fc2.weight", "output.dense.weight"},       {"mlp.fc2.bias", "output.dense.bias"}};
  return prefix + "encoder.layer." + layer + "." + block.at(rest);
}

std::string qkv_part_name(const std::string& prefix, const std::string& ours, const char* part) {
  const size_t dot = ours.find('.', 7);
  const std::string layer = ours.substr(7, dot - 7);
  const bool weight = ours.size() >= 6 && ours.compare(ours.size() - 6, 6, "weight") == 0;
  return prefix + "encoder.layer." + layer + ".attention.attention." + part + (weight ? ".weight" : ".bias");
}

}  // namespace

HfDropout read_hf_dropout(const std::string& path) {
  const Paths p = locate(path);
  const nlohmann::json j = read_json(p.config);
  HfDropout d;
  for (auto [key, out] : {std::pair<const char*, double*>{"hidden_dropout_prob", &d.hidden},
                          std::pair<const char*, double*>{"attention_probs_dropout_prob", &d.attention}}) {
    if (!j.contains(key)) continue;
    VIT_USER_CHECK(j[key].is_number() && j[key].get<double>() >= 0.0 && j[key].get<double>() < 1.0, p.config, ": ",
                   key, " must be a number in [0, 1), got ", j[key].dump());
    *out = j[key].get<double>();
  }
  return d;
}

model::ViTConfig read_hf_config(const std::string& path, std::vector<std::string>* class_names) {
  const Paths p = locate(path);
  const nlohmann::json j = read_json(p.config);
  model::ViTConfig c;
  c.hidden = get_int(j, "hidden_size", 768, p.config);
  c.depth = get_int(j, "num_hidden_layers", 12, p.config);
  c.heads = get_int(j, "num_attention_heads", 12, p.config);
  c.mlp_dim = get_int(j, "intermediate_size", 3072, p.config);
  c.image_size = get_int(j, "image_size", 224, p.config);
  c.patch_size = get_int(j, "patch_size", 16, p.config);
  c.channels = get_int(j, "num_channels", 3, p.config);
  if (j.contains("layer_norm_eps")) c.layernorm_eps = j["layer_norm_eps"].get<float>();
  if (j.contains("initializer_range")) c.init_std = j["initializer_range"].get<float>();
  if (j.contains("hidden_act")) {
    VIT_USER_CHECK(j["hidden_act"] == "gelu", p.config, ": hidden_act is ", j["hidden_act"].dump(),
                   " (vit_hpc implements the exact \"gelu\")");
  }
  if (j.contains("qkv_bias")) VIT_USER_CHECK(j["qkv_bias"].get<bool>(), p.config, ": qkv_bias false is not supported");
  std::vector<std::string> names;
  if (j.contains("id2label") && j["id2label"].is_object()) {
    names.resize(j["id2label"].size());
    for (auto it = j["id2label"].begin(); it != j["id2label"].end(); ++it) {
      const size_t id = std::stoul(it.key());
      if (id < names.size()) names[id] = it.value().get<std::string>();
    }
  }
  c.num_classes = names.empty() ? get_int(j, "num_labels", 2, p.config) : static_cast<int>(names.size());
  if (class_names) *class_names = names;
  return c;
}

HfImport load_hf_vit(const std::string& path, const model::ViTConfig& cfg, uint64_t seed) {
  const Paths p = locate(path);
  std::vector<std::string> names;
  const model::ViTConfig file_cfg = read_hf_config(path, &names);
  auto same = [&](const char* field, int a, int b) {
    VIT_USER_CHECK(a == b, p.config, ": ", field, " is ", a, " but the spec's model asks for ", b);
  };
  same("hidden_size", file_cfg.hidden, cfg.hidden);
  same("num_hidden_layers", file_cfg.depth, cfg.depth);
  same("num_attention_heads", file_cfg.heads, cfg.heads);
  same("intermediate_size", file_cfg.mlp_dim, cfg.mlp_dim);
  same("image_size", file_cfg.image_size, cfg.image_size);
  same("patch_size", file_cfg.patch_size, cfg.patch_size);
  same("num_channels", file_cfg.channels, cfg.channels);

  const io::SafeTensorsFile st = io::read_safetensors(p.weights);
  const std::string prefix = st.tensors.count("vit.embeddings.cls_token") ? "vit." : "";
  VIT_USER_CHECK(st.tensors.count(prefix + "embeddings.cls_token"), p.weights,
                 ": no embeddings.cls_token: not a transformers ViT checkpoint");

  model::ParamLayout layout(cfg);
  HfImport out;
  out.params.resize(static_cast<size_t>(layout.total()));
  model::init_params(layout, cfg.init_std, seed, out.params.data());  // the head keeps this if replaced
  out.class_names = names;

  auto fetch = [&](const std::string& name, int64_t numel) {
    auto it = st.tensors.find(name);
    VIT_USER_CHECK(it != st.tensors.end(), p.weights, ": tensor '", name, "' is missing");
    VIT_USER_CHECK(it->second.numel() == numel, p.weights, ": tensor '", name, "' has ", it->second.numel(),
                   " values, expected ", numel);
    return it->second.to_float();
  };

  const bool has_head = st.tensors.count("classifier.weight") > 0;
  int64_t file_classes = 0;
  if (has_head) {
    const auto& shape = st.tensors.at("classifier.weight").shape;
    file_classes = shape.empty() ? 0 : shape[0];
  }
  const bool keep_head = has_head && file_classes == cfg.num_classes;
  for (const auto& info : layout.params()) {
    const bool head = info.name.rfind("head.", 0) == 0;
    if (head && !keep_head) continue;
    float* dst = out.params.data() + info.offset;
    if (info.name.find(".attn.qkv.") != std::string::npos) {
      const int64_t part = info.numel / 3;
      const char* parts[3] = {"query", "key", "value"};
      for (int k = 0; k < 3; ++k) {
        const auto v = fetch(qkv_part_name(prefix, info.name, parts[k]), part);
        std::copy(v.begin(), v.end(), dst + k * part);
      }
      continue;
    }
    const auto v = fetch(hf_name(prefix, info.name), info.numel);
    std::copy(v.begin(), v.end(), dst);
  }
  out.head_reinitialised = !keep_head;
  if (!has_head) {
    out.note = str_cat(p.weights, ": no classifier in the checkpoint (a ViTModel): the head for ",
                       cfg.num_classes, " classes is freshly initialised");
  } else if (!keep_head) {
    out.note = str_cat(p.weights, ": the checkpoint's head has ", file_classes, " labels, model.num_classes is ",
                       cfg.num_classes, ": the head is re-initialised");
  } else {
    out.note = str_cat(p.weights, ": loaded every weight, head included");
  }
  return out;
}

void export_hf_vit(const std::string& dir, const model::ViTConfig& cfg, const std::vector<float>& params,
                   const std::vector<std::string>& class_names) {
  io::make_dirs(dir);
  model::ParamLayout layout(cfg);
  VIT_CHECK(static_cast<int64_t>(params.size()) == layout.total(), "export: parameter count mismatch");
  std::map<std::string, io::Fp32Tensor> tensors;
  const int64_t C = cfg.hidden;
  for (const auto& info : layout.params()) {
    const float* src = params.data() + info.offset;
    if (info.name.find(".attn.qkv.") != std::string::npos) {
      const int64_t part = info.numel / 3;
      const char* parts[3] = {"query", "key", "value"};
      const bool weight = info.shape.size() == 2;
      for (int k = 0; k < 3; ++k) {
        io::Fp32Tensor t;
        t.shape = weight ? std::vector<int64_t>{C, C} : std::vector<int64_t>{C};
        t.values.assign(src + k * part, src + (k + 1) * part);
        tensors[qkv_part_name("vit.", info.name, parts[k])] = std::move(t);
      }
      continue;
    }
    io::Fp32Tensor t;
    t.values.assign(src, src + info.numel);
    t.shape = info.shape;
    if (info.name == "patch_embed.weight") t.shape = {C, cfg.channels, cfg.patch_size, cfg.patch_size};
    if (info.name == "cls_token") t.shape = {1, 1, C};
    if (info.name == "pos_embed") t.shape = {1, cfg.tokens(), C};
    tensors[hf_name("vit.", info.name)] = std::move(t);
  }
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (int i = 0; i < cfg.num_classes; ++i) {
    const std::string name = i < static_cast<int>(class_names.size()) && !class_names[i].empty()
                                 ? class_names[static_cast<size_t>(i)]
                                 : "LABEL_" + std::to_string(i);
    id2label[std::to_string(i)] = name;
    label2id[name] = i;
  }
  const nlohmann::json config = {{"architectures", {"ViTForImageClassification"}},
                                 {"model_type", "vit"},
                                 {"hidden_size", cfg.hidden},
                                 {"num_hidden_layers", cfg.depth},
                                 {"num_attention_heads", cfg.heads},
                                 {"intermediate_size", cfg.mlp_dim},
                                 {"hidden_act", "gelu"},
                                 {"hidden_dropout_prob", 0.0},
                                 {"attention_probs_dropout_prob", 0.0},
                                 {"initializer_range", cfg.init_std},
                                 {"layer_norm_eps", cfg.layernorm_eps},
                                 {"image_size", cfg.image_size},
                                 {"patch_size", cfg.patch_size},
                                 {"num_channels", cfg.channels},
                                 {"qkv_bias", true},
                                 {"encoder_stride", cfg.patch_size},
                                 {"id2label", id2label},
                                 {"label2id", label2id},
                                 {"torch_dtype", "float32"}};
  io::write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  io::write_json_atomic(dir + "/config.json", config);
}

}  // namespace vit::train
