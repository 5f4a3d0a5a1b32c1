#include "parallel/step_finisher.h"

#include "comm/communicator.h"
#include "core/error.h"
#include "core/stream.h"
#include "kernels/adamw.h"
#include "kernels/cast.h"
#include "kernels/ema.h"
#include "kernels/reduce.h"

namespace vit::parallel {

namespace k = vit::kernels;

StepFinisher::StepFinisher(const Context& ctx, const OptimizerHyper& hyper, comm::Communicator* group)
    : ctx_(ctx),
      hyper_(hyper),
      group_(group),
      scalars_((4 + kPartials) * sizeof(float), ctx.device),
      host_scalars_(2 * sizeof(float), Device::CPU, HostMemory::Pinned) {}

void StepFinisher::set_norm_grads(std::vector<Tensor> grads) {
  for (const Tensor& g : grads) VIT_CHECK(g.dtype == DType::F32, "norm gradients must be fp32");
  norm_grads_ = std::move(grads);
  own_norm_grads_ = true;
}

void StepFinisher::finish(const std::vector<ShardView>& views, float lr, float loss_scale, int64_t adam_step) {
  VIT_CHECK(loss_scale > 0.0f, "loss scale must be positive, got ", loss_scale);
  float* s = scalars_.as<float>();
  Tensor sumsq(s + 0, DType::F32, ctx_.device, {1});
  Tensor flag(s + 1, DType::F32, ctx_.device, {1});
  Tensor factor(s + 2, DType::F32, ctx_.device, {1});
  Tensor norm(s + 3, DType::F32, ctx_.device, {1});
  k::fill(ctx_, tensor_of(scalars_, DType::F32, {4}), 0.0f);
  // One read of each shard for both the norm and the flag (the same sum of
  // squares, term for term, as sum_squares alone).
  Tensor partial(s + 4, DType::F32, ctx_.device, {kPartials});
  for (const ShardView& v : views) {
    if (v.grad.numel() == 0) continue;
    if (own_norm_grads_) {
      k::nonfinite_flag(ctx_, flag, v.grad);
    } else {
      k::sum_squares_flag(ctx_, sumsq, flag, v.grad, partial);
    }
  }
  for (const Tensor& g : norm_grads_) {
    if (g.numel() > 0) k::sum_squares(ctx_, sumsq, g);
  }
  // Shards: the sum of squares and the flag (0 or 1 per rank, so the sum is
  // nonzero exactly when some rank saw a non-finite value) over the group.
  if (group_ != nullptr && group_->size() > 1) {
    group_->all_reduce(s, 2, DType::F32, comm::ReduceOp::Sum, ctx_.device, ctx_.stream);
  }
  // Finite gradients whose squares overflow fp32 give an infinite norm: the
  // step is skipped as well (every rank holds the same reduced sum).
  k::nonfinite_flag(ctx_, flag, sumsq);
  k::grad_scale_from_norm(ctx_, factor, norm, sumsq, hyper_.grad_clip, 1.0f / loss_scale);
  if (has_ema()) ensure_ema(views);  // the average starts from the weights before this update
  k::AdamWHyper hp;
  hp.lr = lr;
  hp.beta1 = hyper_.beta1;
  hp.beta2 = hyper_.beta2;
  hp.eps = hyper_.eps;
  hp.weight_decay = hyper_.weight_decay;
  hp.step = adam_step;
  for (const ShardView& v : views) {
    if (v.master.numel() == 0) continue;
    k::AdamWHyper vh = hp;
    vh.lr = lr * v.lr_mult;
    vh.weight_decay = hyper_.weight_decay * v.wd_mult;
    k::adamw_update(ctx_, v.master, v.m, v.v, v.grad, v.lowp, vh, factor, flag);
  }
  update_ema(views, flag);
}

void StepFinisher::begin_ema(const std::vector<ShardView>& views) {
  if (has_ema()) ensure_ema(views);
}

void StepFinisher::update_ema(const std::vector<ShardView>& views, const Tensor& skip) {
  if (!has_ema()) return;
  for (size_t i = 0; i < views.size(); ++i) {
    if (views[i].master.numel() == 0) continue;
    k::ema_update(ctx_, tensor_of(ema_[i], DType::F32, {views[i].master.numel()}), views[i].master,
                  hyper_.ema_decay, skip);
  }
}

Tensor StepFinisher::ema_of(const std::vector<ShardView>& views, size_t i) {
  VIT_CHECK(has_ema(), "StepFinisher::ema_of: no weight average (ema_decay is 0)");
  ensure_ema(views);
  VIT_CHECK(i < views.size(), "StepFinisher::ema_of: view ", i, " of ", views.size());
  return tensor_of(ema_[i], DType::F32, {views[i].master.numel()});
}

void StepFinisher::allocate_ema(const std::vector<ShardView>& views) {
  if (ema_.size() != views.size()) {
    VIT_CHECK(ema_.empty(), "StepFinisher: the shard views changed (", ema_.size(), " before, ", views.size(),
              " now); the weight average follows one fixed list");
    for (const ShardView& v : views) {
      ema_.emplace_back(static_cast<size_t>(v.master.numel()) * sizeof(float), v.master.device);
    }
    ema_fresh_ = false;
  }
  for (size_t i = 0; i < views.size(); ++i) {
    VIT_CHECK(ema_[i].bytes() == static_cast<size_t>(views[i].master.numel()) * sizeof(float),
              "StepFinisher: shard view ", i, " changed size; the weight average follows one fixed list");
  }
}

void StepFinisher::ensure_ema(const std::vector<ShardView>& views) {
  allocate_ema(views);
  if (ema_fresh_) return;
  for (size_t i = 0; i < views.size(); ++i) {
    if (views[i].master.numel() == 0) continue;
    k::cast(ctx_, tensor_of(ema_[i], DType::F32, {views[i].master.numel()}), views[i].master);
  }
  ema_fresh_ = true;
}

void StepFinisher::swap_ema(const std::vector<ShardView>& views) {
  VIT_CHECK(has_ema(), "StepFinisher::swap_ema: no weight average (ema_decay is 0)");
  ensure_ema(views);  // before any step: the average is the weights themselves
  for (size_t i = 0; i < views.size(); ++i) {
    const ShardView& v = views[i];
    if (v.master.numel() == 0) continue;
    k::swap_values(ctx_, v.master, tensor_of(ema_[i], DType::F32, {v.master.numel()}));
    if (v.lowp.defined()) k::cast(ctx_, v.lowp, v.master);
  }
}

int64_t StepFinisher::view_offset(const ShardView& v, const float* master_base) const {
  VIT_CHECK(v.master.dtype == DType::F32 && v.master.data != nullptr, "StepFinisher: a view's master weights must be fp32");
  const int64_t off = static_cast<const float*>(v.master.data) - master_base;
  VIT_CHECK(off >= 0, "StepFinisher: a view's master weights lie before the master buffer passed in");
  return off;
}

void StepFinisher::export_ema(const std::vector<ShardView>& views, const float* master_base, float* ema) {
  VIT_CHECK(has_ema(), "StepFinisher::export_ema: no weight average (ema_decay is 0)");
  ensure_ema(views);  // before any step: the average is the weights themselves
  for (size_t i = 0; i < views.size(); ++i) {
    const int64_t n = views[i].master.numel();
    if (n == 0) continue;
    k::cast(ctx_, Tensor(ema + view_offset(views[i], master_base), DType::F32, ctx_.device, {n}),
            tensor_of(ema_[i], DType::F32, {n}));
  }
}

void StepFinisher::import_ema(const std::vector<ShardView>& views, const float* master_base, const float* ema) {
  VIT_CHECK(has_ema(), "StepFinisher::import_ema: no weight average (ema_decay is 0)");
  allocate_ema(views);
  for (size_t i = 0; i < views.size(); ++i) {
    const int64_t n = views[i].master.numel();
    if (n == 0) continue;
    k::cast(ctx_, tensor_of(ema_[i], DType::F32, {n}),
            Tensor(const_cast<float*>(ema) + view_offset(views[i], master_base), DType::F32, ctx_.device, {n}));
  }
  ema_fresh_ = true;  // the next finish() continues this average
}

std::vector<float> StepFinisher::export_ema_to_host(const std::vector<ShardView>& views, const float* master_base,
                                                   int64_t elements) {
  Buffer staged(static_cast<size_t>(elements) * sizeof(float), ctx_.device);
  staged.zero();
  export_ema(views, master_base, staged.as<float>());
  synchronize_stream(ctx_.stream);
  std::vector<float> host(static_cast<size_t>(elements));
  copy_bytes(host.data(), Device::CPU, staged.data(), ctx_.device, staged.bytes());
  return host;
}

void StepFinisher::import_ema_from_host(const std::vector<ShardView>& views, const float* master_base,
                                        const std::vector<float>& ema) {
  Buffer staged(ema.size() * sizeof(float), ctx_.device);
  copy_bytes(staged.data(), ctx_.device, ema.data(), Device::CPU, staged.bytes());
  import_ema(views, master_base, staged.as<float>());
  synchronize_stream(ctx_.stream);  // `staged` is freed on return
}

void StepFinisher::read_back() {
  float* h = host_scalars_.as<float>();
  const float* s = scalars_.as<float>();
  copy_bytes_async(h + 0, s + 3, sizeof(float), ctx_.stream);  // norm
  copy_bytes_async(h + 1, s + 1, sizeof(float), ctx_.stream);  // flag
}

float StepFinisher::grad_norm() const { return host_scalars_.as<float>()[0]; }
bool StepFinisher::skipped() const { return host_scalars_.as<float>()[1] != 0.0f; }

}  // namespace vit::parallel
