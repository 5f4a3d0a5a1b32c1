#include "train/train_state.h"

#include "core/error.h"

namespace vit::train {

using nlohmann::json;

namespace {

const json& need(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) throw UserError(str_cat(where, ": field \"", key, "\" is missing"));
  return j.at(key);
}

template <typename T>
T get(const json& j, const char* key, const std::string& where) {
  const json& v = need(j, key, where);
  try {
    return v.get<T>();
  } catch (const std::exception&) {
    throw UserError(str_cat(where, ": field \"", key, "\" has the wrong type (", v.type_name(), ")"));
  }
}

}  // namespace

json model_config_to_json(const model::ViTConfig& c) {
  return {{"image_size", c.image_size}, {"patch_size", c.patch_size}, {"channels", c.channels},
          {"hidden", c.hidden},         {"depth", c.depth},           {"heads", c.heads},
          {"mlp_dim", c.mlp_dim},       {"num_classes", c.num_classes}, {"layernorm_eps", c.layernorm_eps},
          {"init_std", c.init_std}};
}

model::ViTConfig model_config_from_json(const json& j, const std::string& where) {
  model::ViTConfig c;
  c.image_size = get<int>(j, "image_size", where);
  c.patch_size = get<int>(j, "patch_size", where);
  c.channels = get<int>(j, "channels", where);
  c.hidden = get<int>(j, "hidden", where);
  c.depth = get<int>(j, "depth", where);
  c.heads = get<int>(j, "heads", where);
  c.mlp_dim = get<int>(j, "mlp_dim", where);
  c.num_classes = get<int>(j, "num_classes", where);
  c.layernorm_eps = get<float>(j, "layernorm_eps", where);
  c.init_std = get<float>(j, "init_std", where);
  try {
    c.validate();
  } catch (const Error& e) {
    throw UserError(str_cat(where, ": the model sizes do not form a ViT (", e.what(), ")"));
  }
  return c;
}

// Doubles are written with enough digits to read back bitwise (nlohmann
// prints the shortest round-trip form), which exact resume relies on.
json train_state_to_json(const TrainState& s) {
  json j;
  j["step"] = s.step;
  j["adam_step"] = s.adam_step;
  j["position"] = {{"epoch", s.epoch}, {"step_in_epoch", s.step_in_epoch}, {"images_in_epoch", s.images_in_epoch}};
  j["epoch_progress"] = {{"loss_sum", s.progress.loss_sum}, {"images", s.progress.images},
                         {"seconds", s.progress.seconds}};
  j["loss_scaler"] = {{"scale", s.scaler.scale},
                      {"clean_steps", s.scaler.clean_steps},
                      {"overflows_left", s.scaler.overflows_left},
                      {"skipped", s.scaler.skipped}};
  j["nonfinite_in_row"] = s.nonfinite_in_row;
  j["lr_schedule"] = {{"base_lr", s.base_lr},
                      {"total_steps", s.total_steps},
                      {"warmup_steps", s.warmup_steps},
                      {"kind", s.schedule},
                      {"steps_per_epoch", s.steps_per_epoch}};
  j["rng"] = {{"seed", s.seed},
              {"augment_seed", s.augment_seed},
              {"streams", "sampler: Rng(mix_seed(seed, epoch, 0x5a3b1e)); augmentation: "
                          "Rng(mix_seed(augment_seed, epoch, image index)): positions, not states"}};
  j["metrics"] = {{"results_dir", s.results_dir}, {"bytes", s.metrics_bytes}};
  if (s.keep_best) j["keep_best"] = {{"epoch", s.best_epoch}, {"accuracy", s.best_accuracy}};
  j["model"] = model_config_to_json(s.model);
  j["class_names"] = s.class_names;
  j["layout"] = s.layout;
  j["spec"] = s.spec;
  return j;
}

TrainState train_state_from_json(const json& j, const std::string& where) {
  TrainState s;
  s.step = get<int64_t>(j, "step", where);
  s.adam_step = get<int64_t>(j, "adam_step", where);
  const json& pos = need(j, "position", where);
  s.epoch = get<int64_t>(pos, "epoch", where);
  s.step_in_epoch = get<int64_t>(pos, "step_in_epoch", where);
  s.images_in_epoch = get<int64_t>(pos, "images_in_epoch", where);
  const json& prog = need(j, "epoch_progress", where);
  s.progress.loss_sum = get<double>(prog, "loss_sum", where);
  s.progress.images = get<int64_t>(prog, "images", where);
  s.progress.seconds = get<double>(prog, "seconds", where);
  const json& sc = need(j, "loss_scaler", where);
  s.scaler.scale = get<double>(sc, "scale", where);
  s.scaler.clean_steps = get<int64_t>(sc, "clean_steps", where);
  s.scaler.overflows_left = get<int>(sc, "overflows_left", where);
  s.scaler.skipped = get<int64_t>(sc, "skipped", where);
  s.nonfinite_in_row = get<int64_t>(j, "nonfinite_in_row", where);
  const json& lr = need(j, "lr_schedule", where);
  s.base_lr = get<double>(lr, "base_lr", where);
  s.total_steps = get<int64_t>(lr, "total_steps", where);
  s.warmup_steps = get<int64_t>(lr, "warmup_steps", where);
  s.schedule = get<std::string>(lr, "kind", where);
  s.steps_per_epoch = get<int64_t>(lr, "steps_per_epoch", where);
  const json& rng = need(j, "rng", where);
  s.seed = get<uint64_t>(rng, "seed", where);
  s.augment_seed = get<uint64_t>(rng, "augment_seed", where);
  const json& m = need(j, "metrics", where);
  s.results_dir = get<std::string>(m, "results_dir", where);
  s.metrics_bytes = get<std::vector<int64_t>>(m, "bytes", where);
  if (j.contains("keep_best")) {  // format 2, runs with eval.keep_best
    const json& kb = j.at("keep_best");
    s.keep_best = true;
    s.best_epoch = get<int64_t>(kb, "epoch", where);
    s.best_accuracy = get<double>(kb, "accuracy", where);
    VIT_USER_CHECK(s.best_epoch >= 0, where, ": keep_best.epoch must be 0 (none yet) or an epoch, got ", s.best_epoch);
  }
  s.model = model_config_from_json(need(j, "model", where), where + " \"model\"");
  s.class_names = get<std::vector<std::string>>(j, "class_names", where);
  s.layout = need(j, "layout", where);
  s.spec = need(j, "spec", where);
  VIT_USER_CHECK(s.step >= 0 && s.adam_step >= 1 && s.epoch >= 1 && s.step_in_epoch >= 0 && s.images_in_epoch >= 0,
                 where, ": position out of range (step ", s.step, ", adam_step ", s.adam_step, ", epoch ", s.epoch,
                 ", step_in_epoch ", s.step_in_epoch, ")");
  VIT_USER_CHECK(s.scaler.scale > 0, where, ": loss_scaler.scale must be positive");
  return s;
}

}  // namespace vit::train
