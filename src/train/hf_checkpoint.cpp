#include "train/hf_checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
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

struct Paths {
  std::string config, weights;
};

Paths locate(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw UserError(str_cat(path, ": no such folder or file (give a Hugging Face checkpoint folder holding "
                                  "model.safetensors and config.json, or its model.safetensors)"));
  }
  if (S_ISDIR(st.st_mode)) return {path + "/config.json", path + "/model.safetensors"};
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
  VIT_USER_CHECK(j[key].is_number_integer() && j[key].get<int64_t>() >= INT32_MIN && j[key].get<int64_t>() <= INT32_MAX,
                 file, ": ", key, " must be an integer, got ", j[key].dump());
  return j[key].get<int>();
}

float get_float(const nlohmann::json& j, const std::string& key, float fallback, const std::string& file) {
  if (!j.contains(key)) return fallback;
  VIT_USER_CHECK(j[key].is_number(), file, ": ", key, " must be a number, got ", j[key].dump());
  return j[key].get<float>();
}

// Sizes vit_hpc can run, as the model code requires them; a checkpoint's
// config.json is user input, so this is a message, not a check failure.
void check_sizes(const model::ViTConfig& c, const std::string& file) {
  const std::pair<const char*, int> positive[] = {
      {"hidden_size", c.hidden},         {"num_hidden_layers", c.depth}, {"num_attention_heads", c.heads},
      {"intermediate_size", c.mlp_dim},  {"image_size", c.image_size},   {"patch_size", c.patch_size},
      {"num_channels", c.channels},      {"the label count (id2label / num_labels)", c.num_classes}};
  for (const auto& [field, v] : positive) VIT_USER_CHECK(v >= 1, file, ": ", field, " is ", v, " (allowed: >= 1)");
  VIT_USER_CHECK(c.hidden % c.heads == 0, file, ": num_attention_heads ", c.heads, " does not divide hidden_size ",
                 c.hidden, " (allowed: a divisor of hidden_size, so that every head has the same size)");
  VIT_USER_CHECK(c.image_size % c.patch_size == 0, file, ": patch_size ", c.patch_size, " does not divide image_size ",
                 c.image_size, " (allowed: a divisor of image_size)");
  VIT_USER_CHECK(std::isfinite(c.layernorm_eps) && c.layernorm_eps > 0, file, ": layer_norm_eps is ",
                 c.layernorm_eps, " (allowed: > 0)");
}

// The shape transformers gives the tensor that holds `info` (for q/k/v: one
// of the three parts). Export writes these shapes; import requires them.
std::vector<int64_t> hf_shape(const model::ParamInfo& info, const model::ViTConfig& cfg) {
  const int64_t C = cfg.hidden;
  if (info.name.find(".attn.qkv.") != std::string::npos) {
    return info.shape.size() == 2 ? std::vector<int64_t>{C, C} : std::vector<int64_t>{C};
  }
  if (info.name == "patch_embed.weight") return {C, cfg.channels, cfg.patch_size, cfg.patch_size};
  if (info.name == "cls_token") return {1, 1, C};
  if (info.name == "pos_embed") return {1, cfg.tokens(), C};
  return info.shape;
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += str_cat(i ? ", " : "", shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
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
  c.layernorm_eps = get_float(j, "layer_norm_eps", c.layernorm_eps, p.config);
  c.init_std = get_float(j, "initializer_range", c.init_std, p.config);
  if (j.contains("hidden_act")) {
    VIT_USER_CHECK(j["hidden_act"] == "gelu", p.config, ": hidden_act is ", j["hidden_act"].dump(),
                   " (vit_hpc implements the exact \"gelu\")");
  }
  if (j.contains("qkv_bias")) {
    VIT_USER_CHECK(j["qkv_bias"].is_boolean() && j["qkv_bias"].get<bool>(), p.config, ": qkv_bias is ",
                   j["qkv_bias"].dump(), " (vit_hpc supports true only)");
  }
  std::vector<std::string> names;
  if (j.contains("id2label") && j["id2label"].is_object()) {
    names.resize(j["id2label"].size());
    for (auto it = j["id2label"].begin(); it != j["id2label"].end(); ++it) {
      const std::string& key = it.key();
      VIT_USER_CHECK(!key.empty() && key.size() < 10 && key.find_first_not_of("0123456789") == std::string::npos,
                     p.config, ": id2label key \"", key, "\" is not a label number");
      VIT_USER_CHECK(it.value().is_string(), p.config, ": id2label[\"", key, "\"] must be a string, got ",
                     it.value().dump());
      const size_t id = std::stoul(key);
      if (id < names.size()) names[id] = it.value().get<std::string>();
    }
  }
  c.num_classes = names.empty() ? get_int(j, "num_labels", 2, p.config) : static_cast<int>(names.size());
  check_sizes(c, p.config);
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

  // A tensor of exactly the shape transformers gives it (an element count
  // alone would let a transposed weight through), with finite values only.
  auto fetch = [&](const std::string& name, const std::vector<int64_t>& shape) {
    auto it = st.tensors.find(name);
    VIT_USER_CHECK(it != st.tensors.end(), p.weights, ": tensor '", name, "' is missing");
    VIT_USER_CHECK(it->second.shape == shape, p.weights, ": tensor '", name, "' has shape ",
                   shape_text(it->second.shape), " but this model needs ", shape_text(shape),
                   it->second.numel() == numel_of(shape)
                       ? " (the same number of values in another layout: a transposed or reshaped weight)"
                       : "");
    std::vector<float> v = it->second.to_float();
    for (size_t i = 0; i < v.size(); ++i) {
      if (std::isfinite(v[i])) continue;
      size_t bad = 0;
      for (const float x : v) bad += !std::isfinite(x);
      throw UserError(str_cat(p.weights, ": tensor '", name, "' holds ", bad,
                              bad == 1 ? " value that is" : " values that are", " not finite (the first, ", v[i],
                              ", at index ", i,
                              "): the checkpoint is damaged or diverged; vit_hpc refuses to start from it"));
    }
    return v;
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
        const auto v = fetch(qkv_part_name(prefix, info.name, parts[k]), hf_shape(info, cfg));
        std::copy(v.begin(), v.end(), dst + k * part);
      }
      continue;
    }
    const auto v = fetch(hf_name(prefix, info.name), hf_shape(info, cfg));
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

void check_export_destination(const std::string& dir, bool overwrite) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    VIT_USER_CHECK(S_ISDIR(st.st_mode), dir, ": is a file, not a folder (the export writes model.safetensors and "
                   "config.json into a folder: name a folder)");
    VIT_USER_CHECK(::access(dir.c_str(), W_OK) == 0, dir, ": the folder is not writable (", std::strerror(errno), ")");
    const bool holds_export = ::access((dir + "/model.safetensors").c_str(), F_OK) == 0 ||
                              ::access((dir + "/config.json").c_str(), F_OK) == 0;
    VIT_USER_CHECK(!holds_export || overwrite, dir, ": already holds an export (model.safetensors, config.json); "
                   "set checkpoint.overwrite_export: true to replace it, or choose another folder");
    return;
  }
  std::string parent = dir;
  while (parent.size() > 1 && parent.back() == '/') parent.pop_back();
  const size_t slash = parent.find_last_of('/');
  parent = slash == std::string::npos ? "." : slash == 0 ? "/" : parent.substr(0, slash);
  VIT_USER_CHECK(::stat(parent.c_str(), &st) == 0, dir, ": its parent folder ", parent,
                 " does not exist (create it first, or choose another folder)");
  VIT_USER_CHECK(S_ISDIR(st.st_mode), dir, ": ", parent, " is a file, not a folder");
  VIT_USER_CHECK(::access(parent.c_str(), W_OK) == 0, dir, ": cannot be created: ", parent, " is not writable (",
                 std::strerror(errno), ")");
}

void export_hf_vit(const std::string& dir, const model::ViTConfig& cfg, const std::vector<float>& params,
                   const std::vector<std::string>& class_names) {
  io::make_dirs(dir);
  model::ParamLayout layout(cfg);
  VIT_CHECK(static_cast<int64_t>(params.size()) == layout.total(), "export: parameter count mismatch");
  std::map<std::string, io::Fp32Tensor> tensors;
  for (const auto& info : layout.params()) {
    const float* src = params.data() + info.offset;
    if (info.name.find(".attn.qkv.") != std::string::npos) {
      const int64_t part = info.numel / 3;
      const char* parts[3] = {"query", "key", "value"};
      for (int k = 0; k < 3; ++k) {
        io::Fp32Tensor t;
        t.shape = hf_shape(info, cfg);
        t.values.assign(src + k * part, src + (k + 1) * part);
        tensors[qkv_part_name("vit.", info.name, parts[k])] = std::move(t);
      }
      continue;
    }
    io::Fp32Tensor t;
    t.values.assign(src, src + info.numel);
    t.shape = hf_shape(info, cfg);
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
  io::write_files_atomic({{dir + "/model.safetensors", io::safetensors_bytes(tensors, {{"format", "pt"}})},
                          {dir + "/config.json", config.dump(2) + "\n"}});
}

}  // namespace vit::train
