#include "model/vit.h"

#include "kernels/attention.h"
#include "kernels/cast.h"
#include "core/rng.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/gpu_context.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"

namespace vit::model {

namespace k = vit::kernels;

// Activations one block keeps for its backward pass. Widths are this rank's:
// Cl = C / tp for attention, Fl = F / tp for the MLP.
struct ViTModel::BlockActs {
  Buffer ln1, ln1_mean, ln1_rstd;  // (B, T, C), (B*T), (B*T); ln1, ln2: none with recompute_norm
  Buffer qkv;                      // (B, T, 3 Cl)
  Buffer att, att_aux;             // (B, T, Cl), attention_aux_bytes
  Buffer xmid;                     // (B, T, C): x + attention branch
  Buffer ln2, ln2_mean, ln2_rstd;
  Buffer fc1_pre, fc1;             // (B, T, Fl): before and after GELU (fc1: none with recompute_gelu)
};

// What forward keeps for backward, per slot (micro-batch in flight).
struct ViTModel::Activations {
  std::vector<Buffer> residuals;                    // blocks held + 1, of (B, T, C)
  std::vector<std::unique_ptr<BlockActs>> blocks;   // one per block held (none with recompute)
  Buffer patches;                                   // (B, NP, P): the patch weight gradient's input
  Buffer cls, cls_ln, cls_mean, cls_rstd;           // (B, C), (B, C), (B), (B)
  Buffer logits, dlogits, losses, predicted;        // (B, K), (B, K), (B), (B) int32
  TrainExtras extras;                               // of the training micro-batch in this slot
};

ViTModel::ViTModel(const ViTConfig& cfg, const ComputeConfig& compute, const Context& ctx, int max_batch,
                   const ShardSpec& shard, int slots)
    : cfg_(cfg), compute_(compute), layout_(cfg, shard), ctx_(ctx), max_batch_(max_batch) {
  VIT_CHECK(max_batch > 0, "max_batch must be positive");
  VIT_CHECK(slots >= 1, "the model needs at least one activation slot");
  VIT_CHECK(ctx.device == Device::CUDA || compute.dtype == DType::F32,
            "the CPU computes in fp32 only; precision ", dtype_name(compute.dtype), " needs the GPU");
  const int64_t B = max_batch, T = cfg.tokens(), C = cfg.hidden;
  const int64_t Cl = local_hidden(), NHl = cfg.heads / layout_.shard().tp_size;
  const int64_t NP = cfg.num_patches(), P = cfg.patch_dim(), K = cfg.num_classes, Fl = local_mlp();
  const DType dt = compute.dtype, f32 = DType::F32;

  // The attention path that runs this shape (every head size runs; the
  // owner of the model reports attention_note() once).
  compute_.attention = k::resolve_attention(ctx.device, compute.attention, dt, Cl, NHl, &attention_note_);
  if (ctx.on_gpu() && compute_.attention == k::AttentionImpl::CuDNN) {
    std::string reasons;
    if (!k::cudnn_attention_available(ctx, dt, B, T, Cl, NHl, &reasons)) {
      compute_.attention = k::resolve_attention(ctx.device, k::AttentionImpl::Cublas, dt, Cl, NHl);
      attention_note_ = str_cat("cuDNN builds no fused attention plan for batch ", B, ", ", T, " tokens, ", NHl,
                                " heads of ", Cl / NHl, " (", reasons, "); attention runs on the ",
                                k::attention_impl_name(compute_.attention), " path instead");
    }
  }
  // Rounded up to whole fp32 words: the blocks view aux as fp32 (B*NH*T*T
  // 16-bit probabilities can be an odd number of halves).
  const size_t aux_bytes = (k::attention_aux_bytes(ctx.device, compute_.attention, dt, B, T, NHl) + 3) / 4 * 4;

  const int held = layout_.end_block() - layout_.first_block();
  for (int s = 0; s < slots; ++s) {
    auto a = std::make_unique<Activations>();
    for (int l = 0; l <= held; ++l) a->residuals.push_back(alloc(B * T * C, dt));
    // With recompute only the block inputs (residuals) persist; one set of
    // block activations is rebuilt for each block during backward.
    if (!compute.recompute) {
      for (int l = 0; l < held; ++l) a->blocks.push_back(make_block_acts(B, aux_bytes));
    }
    if (layout_.shard().embeddings) {
      a->patches = alloc(B * NP * P, dt);
    }
    if (layout_.shard().head) {
      a->cls = alloc(B * C, dt);
      a->cls_ln = alloc(B * C, dt);
      a->cls_mean = alloc(B, f32);
      a->cls_rstd = alloc(B, f32);
      a->logits = alloc(B * K, dt);
      a->dlogits = alloc(B * K, dt);
      a->losses = alloc(B, f32);
      a->predicted = Buffer(static_cast<size_t>(B) * sizeof(int32_t), ctx.device);
    }
    acts_.push_back(std::move(a));
  }
  if (compute.recompute && held > 0) recompute_acts_ = make_block_acts(B, aux_bytes);
  dres_ = alloc(B * T * C, dt);
  // dtmp_ is scratch within one stage call (block_backward; embed_forward's
  // patch projection and embed_backward's gradient of it, (B, NP, C) <= (B, T, C)):
  // nothing in it outlives the call, so no embedding buffer of its own.
  dtmp_ = alloc(B * T * C, dt);
  // The QKV gradient over the QKV activations, which nothing reads after
  // the attention backward, where its kernel allows (the short-sequence
  // kernel: attention_backward_in_place); a buffer of its own otherwise.
  dqkv_in_place_ = held > 0 && k::attention_backward_in_place(ctx, compute_.attention, dt, T, Cl, NHl);
  if (held > 0 && !dqkv_in_place_) dqkv_ = alloc(B * T * 3 * Cl, dt);
  // The MLP's gradients need no (B, T, F) buffers of their own: fc2's input
  // gradient is written over the GELU output and GELU's over fc1's output
  // (block_backward). Only recompute_gelu, which keeps no GELU output, has
  // one: the forward's GELU output and then fc2's input gradient.
  if (compute.recompute_gelu) dhidden_ = alloc(B * T * Fl, dt);
  // recompute_norm: the blocks' LayerNorm outputs in one buffer, each used
  // right after it is written (forward) or made again (backward).
  if (compute.recompute_norm && held > 0) norm_ = alloc(B * T * C, dt);
  // The branch output before its residual add: only where the add cannot be
  // the GEMM's (tensor-parallel partial sums, masked branches; see
  // block_forward_compute).
  if (held > 0 && (layout_.shard().tp_size > 1 || compute.reg.any_noise())) branch_ = alloc(B * T * C, dt);
  if (layout_.shard().head) {
    dcls_ = alloc(B * C, dt);
    dcls_ln_ = alloc(B * C, dt);
  }
  const Regularization& reg = compute.reg;
  VIT_CHECK(reg.drop_path >= 0.0f && reg.drop_path < 1.0f, "drop path rate ", reg.drop_path, " is outside [0, 1)");
  VIT_CHECK(reg.hidden_dropout >= 0.0f && reg.hidden_dropout < 1.0f, "hidden dropout ", reg.hidden_dropout,
            " is outside [0, 1)");
  VIT_CHECK(reg.label_smoothing >= 0.0f && reg.label_smoothing < 1.0f, "label smoothing ", reg.label_smoothing,
            " is outside [0, 1)");
  if (reg.any_noise()) dmasked_ = alloc(B * T * C, dt);
  if (held > 1) fc2_bias_sums_ = alloc(2 * C, f32);  // two halves: blocks of even and odd index
}

ViTModel::~ViTModel() = default;

Tensor ViTModel::fc2_bias_half(int block) const {
  const int64_t C = cfg_.hidden;
  return tensor_of(fc2_bias_sums_, DType::F32, {C}, static_cast<size_t>(C) * (block & 1));
}

std::unique_ptr<ViTModel::BlockActs> ViTModel::make_block_acts(int64_t B, size_t aux_bytes) {
  const int64_t T = cfg_.tokens(), C = cfg_.hidden, Cl = local_hidden(), Fl = local_mlp();
  const DType dt = compute_.dtype, f32 = DType::F32;
  auto a = std::make_unique<BlockActs>();
  if (!compute_.recompute_norm) a->ln1 = alloc(B * T * C, dt);
  a->ln1_mean = alloc(B * T, f32);
  a->ln1_rstd = alloc(B * T, f32);
  a->qkv = alloc(B * T * 3 * Cl, dt);
  a->att = alloc(B * T * Cl, dt);
  a->att_aux = Buffer(aux_bytes, ctx_.device);
  activation_bytes_ += aux_bytes;
  a->xmid = alloc(B * T * C, dt);
  if (!compute_.recompute_norm) a->ln2 = alloc(B * T * C, dt);
  a->ln2_mean = alloc(B * T, f32);
  a->ln2_rstd = alloc(B * T, f32);
  a->fc1_pre = alloc(B * T * Fl, dt);
  if (!compute_.recompute_gelu) a->fc1 = alloc(B * T * Fl, dt);
  return a;
}

Buffer ViTModel::alloc(size_t elems, DType t) {
  activation_bytes_ += elems * dtype_size(t);
  return Buffer(elems * dtype_size(t), ctx_.device);
}

int64_t ViTModel::local_hidden() const { return cfg_.hidden / layout_.shard().tp_size; }
int64_t ViTModel::local_mlp() const { return cfg_.mlp_dim / layout_.shard().tp_size; }

void ViTModel::bind(const Tensor& params, const Tensor& grads) {
  VIT_CHECK(params.dtype == compute_.dtype, "parameters must be in the compute dtype ", dtype_name(compute_.dtype));
  VIT_CHECK(params.device == ctx_.device, "parameters live on the wrong device");
  flat_source_ = std::make_unique<FlatParamSource>(layout_, params, grads);
  source_ = flat_source_.get();
}

void ViTModel::set_param_source(ParamSource* source) {
  flat_source_.reset();
  source_ = source;
}

Tensor ViTModel::param(int index) const {
  VIT_CHECK(source_ != nullptr, "ViTModel: bind() the parameters (or set a parameter source) before running");
  VIT_CHECK(index >= 0, "ViTModel: this rank's layout does not hold the parameter asked for");
  return source_->param(index);
}

Tensor ViTModel::grad(int index) const {
  VIT_CHECK(source_ != nullptr, "ViTModel: bind() the parameters (or set a parameter source) before running");
  return source_->grad(index);
}

void ViTModel::set_train_extras(const TrainExtras& extras, int slot) {
  VIT_CHECK(extras.labels_b.defined() == extras.lambda.defined(),
            "TrainExtras: labels_b and lambda come together (one is defined, the other not)");
  acts_.at(static_cast<size_t>(slot))->extras = extras;
}

uint64_t ViTModel::site_key(int l, int site, int slot) const {
  const uint64_t key = acts_.at(static_cast<size_t>(slot))->extras.noise_key;
  VIT_CHECK(key != 0, "ViTModel: a training pass with drop path or dropout needs the micro-batch's noise key "
                      "(set_train_extras before its forward)");
  return mix_seed(key, static_cast<uint64_t>(l + 1), static_cast<uint64_t>(site));
}

bool ViTModel::branch_masked(int l) const {
  return training_ && (compute_.reg.drop_path_rate(l, cfg_.depth) > 0.0f || compute_.reg.hidden_dropout > 0.0f);
}

// out = in through block l's masks of `branch` (0 attention, 1 MLP): the
// hidden dropout, then the drop path. The same call maps a branch's output
// forward and its gradient backward (the masks are functions of the key).
void ViTModel::apply_branch_masks(Tensor out, const Tensor& in, int l, int branch, int B, int slot) {
  const Regularization& reg = compute_.reg;
  const int64_t per_sample = in.numel() / B;
  Tensor src = in.reshape({B, per_sample});
  Tensor dst = out.reshape({B, per_sample});
  const int64_t first = acts_.at(static_cast<size_t>(slot))->extras.first_sample;
  if (reg.hidden_dropout > 0.0f) {
    k::dropout(ctx_, dst, src, 1.0f - reg.hidden_dropout, site_key(l, 2 + branch, slot), first);
    src = dst;
  }
  const float rate = reg.drop_path_rate(l, cfg_.depth);
  if (rate > 0.0f) {
    k::drop_path(ctx_, dst, src, 1.0f - rate, site_key(l, branch, slot), first);
    src = dst;
  }
  if (src.data != dst.data) k::cast(ctx_, dst, src);  // nothing masked: a copy
}

void ViTModel::reduce_over_tp(Tensor x) {
  if (layout_.shard().tp_size == 1) return;
  VIT_CHECK(tp_ != nullptr, "ViTModel: a tensor-parallel shard needs set_tensor_parallel()");
  tp_->all_reduce(x);
}

ViTModel::BlockActs& ViTModel::acts_for(int l, int slot) {
  if (compute_.recompute) return *recompute_acts_;
  return *acts_.at(static_cast<size_t>(slot))->blocks.at(static_cast<size_t>(l - layout_.first_block()));
}

Tensor ViTModel::residual(int l, int B, int slot) const {
  VIT_CHECK(l >= layout_.first_block() && l <= layout_.end_block(), "residual ", l, " is not held by this rank");
  const Activations& a = *acts_.at(static_cast<size_t>(slot));
  return tensor_of(a.residuals[static_cast<size_t>(l - layout_.first_block())], compute_.dtype,
                   {B, cfg_.tokens(), cfg_.hidden});
}

Tensor ViTModel::residual_grad(int B) const { return tensor_of(dres_, compute_.dtype, {B, cfg_.tokens(), cfg_.hidden}); }

Tensor ViTModel::losses(int B, int slot) const {
  return tensor_of(acts_.at(static_cast<size_t>(slot))->losses, DType::F32, {B});
}

Tensor ViTModel::predicted(int B, int slot) const {
  return Tensor(acts_.at(static_cast<size_t>(slot))->predicted.data(), DType::I32, ctx_.device, {B});
}

Tensor ViTModel::logits(int B, int slot) const {
  return tensor_of(acts_.at(static_cast<size_t>(slot))->logits, compute_.dtype, {B, cfg_.num_classes});
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

void ViTModel::embed_forward(const Tensor& images, int B, int slot) {
  VIT_CHECK(B > 0 && B <= max_batch_, "batch ", B, " exceeds the model's max_batch ", max_batch_);
  VIT_CHECK(images.ndim == 4 && images.dim(0) >= B && images.dim(1) == cfg_.image_size &&
                images.dim(2) == cfg_.image_size && images.dim(3) == cfg_.channels,
            "images must be (B, ", cfg_.image_size, ", ", cfg_.image_size, ", ", cfg_.channels, "), got ",
            images.shape_str());
  const Segment seg{Segment::Embed, -1};
  source_->before_forward(seg);
  Activations& a = *acts_.at(static_cast<size_t>(slot));
  const DType dt = compute_.dtype;
  const int64_t NP = cfg_.num_patches(), C = cfg_.hidden;
  Tensor imgs(images.data, images.dtype, images.device, {B, images.dim(1), images.dim(2), images.dim(3)});
  Tensor patches = tensor_of(a.patches, dt, {B * NP, cfg_.patch_dim()});
  Tensor pe = tensor_of(dtmp_, dt, {B * NP, C});  // the patch projection, read once just below
  k::patchify(ctx_, patches.reshape({B, NP, cfg_.patch_dim()}), imgs, cfg_.patch_size);
  k::matmul_forward(ctx_, pe, Tensor(), patches, param(layout_.patch_w), param(layout_.patch_b));
  k::embed_tokens_forward(ctx_, residual(0, B, slot), pe.reshape({B, NP, C}), param(layout_.cls_token),
                          param(layout_.pos_embed));
  if (training_ && compute_.reg.hidden_dropout > 0.0f) {
    Tensor x0 = residual(0, B, slot).reshape({B, cfg_.tokens() * C});
    k::dropout(ctx_, x0, x0, 1.0f - compute_.reg.hidden_dropout, site_key(cfg_.depth, 4, slot),
               a.extras.first_sample);
  }
  source_->after_forward(seg);
}

void ViTModel::block_forward(int l, int B, int slot) {
  VIT_CHECK(B > 0 && B <= max_batch_, "batch ", B, " exceeds the model's max_batch ", max_batch_);
  const Segment seg{Segment::Block, l};
  source_->before_forward(seg);
  block_forward_compute(l, B, slot);
  source_->after_forward(seg);
}

void ViTModel::block_forward_compute(int l, int B, int slot) {
  VIT_CHECK(layout_.has_block(l), "block ", l, " is not held by this rank");
  const BlockParams& p = layout_.blocks[static_cast<size_t>(l)];
  BlockActs& a = acts_for(l, slot);
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t T = cfg_.tokens(), C = cfg_.hidden, Cl = local_hidden(), Fl = local_mlp(), BT = B * T;
  const int NHl = cfg_.heads / layout_.shard().tp_size;
  // Row-parallel biases count once: tensor-parallel rank 0 adds them before the reduction.
  const bool row_bias = layout_.shard().tp_rank == 0;
  Tensor x = residual(l, B, slot).reshape({BT, C});
  Tensor ln1 = tensor_of(compute_.recompute_norm ? norm_ : a.ln1, dt, {BT, C});
  Tensor qkv = tensor_of(a.qkv, dt, {BT, 3 * Cl});
  Tensor att = tensor_of(a.att, dt, {BT, Cl});
  Tensor xmid = tensor_of(a.xmid, dt, {BT, C});
  Tensor ln2 = tensor_of(compute_.recompute_norm ? norm_ : a.ln2, dt, {BT, C});
  Tensor fc1_pre = tensor_of(a.fc1_pre, dt, {BT, Fl});
  // Without a stored GELU output, fc2 reads it from the backward's dhidden_
  // (free during forward).
  Tensor fc1 = tensor_of(compute_.recompute_gelu ? dhidden_ : a.fc1, dt, {BT, Fl});
  Tensor aux(a.att_aux.data(), f32, ctx_.device, {static_cast<int64_t>(a.att_aux.bytes() / 4)});
  // The residual adds ride in the proj and fc2 GEMMs (matmul_forward's
  // residual input) unless the branch output must be summed over the
  // tensor-parallel group or masked first; then the branch lands in a buffer
  // that every block shares (it is consumed right away) and is added apart.
  const bool fused_residual = layout_.shard().tp_size == 1 && !branch_masked(l);
  VIT_CHECK(fused_residual || branch_.bytes() > 0, "ViTModel: block ", l, " needs the branch buffer");

  k::layernorm_forward(ctx_, ln1, tensor_of(a.ln1_mean, f32, {BT}), tensor_of(a.ln1_rstd, f32, {BT}), x,
                       param(p.ln1_w), param(p.ln1_b), cfg_.layernorm_eps);
  k::matmul_forward(ctx_, qkv, Tensor(), ln1, param(p.qkv_w), param(p.qkv_b));  // column-parallel
  k::attention_forward(ctx_, att.reshape({B, T, Cl}), aux, qkv.reshape({B, T, 3 * Cl}), NHl, compute_.attention);
  Tensor next = residual(l + 1, B, slot).reshape({BT, C});
  if (fused_residual) {
    // xmid = x + proj(att), then LN2(xmid); next = xmid + fc2(gelu(fc1(ln2))).
    k::matmul_forward(ctx_, xmid, Tensor(), att, param(p.proj_w), param(p.proj_b), x);
    k::layernorm_forward(ctx_, ln2, tensor_of(a.ln2_mean, f32, {BT}), tensor_of(a.ln2_rstd, f32, {BT}), xmid,
                         param(p.ln2_w), param(p.ln2_b), cfg_.layernorm_eps);
    k::matmul_forward(ctx_, fc1, fc1_pre, ln2, param(p.fc1_w), param(p.fc1_b));  // GELU epilogue
    k::matmul_forward(ctx_, next, Tensor(), fc1, param(p.fc2_w), param(p.fc2_b), xmid);
    return;
  }
  Tensor branch = tensor_of(branch_, dt, {BT, C});
  k::matmul_forward(ctx_, branch, Tensor(), att, param(p.proj_w), row_bias ? param(p.proj_b) : Tensor());
  reduce_over_tp(branch);  // reduce_from_tensor_parallel_region
  if (branch_masked(l)) apply_branch_masks(branch, branch, l, 0, B, slot);
  // xmid = x + branch and LN2(xmid) in one pass (the bits of the two ops apart).
  k::residual_layernorm_forward(ctx_, xmid, ln2, tensor_of(a.ln2_mean, f32, {BT}), tensor_of(a.ln2_rstd, f32, {BT}),
                                x, branch, param(p.ln2_w), param(p.ln2_b), cfg_.layernorm_eps);
  k::matmul_forward(ctx_, fc1, fc1_pre, ln2, param(p.fc1_w), param(p.fc1_b));  // column-parallel, GELU epilogue
  k::matmul_forward(ctx_, branch, Tensor(), fc1, param(p.fc2_w), row_bias ? param(p.fc2_b) : Tensor());
  reduce_over_tp(branch);  // reduce_from_tensor_parallel_region
  if (branch_masked(l)) apply_branch_masks(branch, branch, l, 1, B, slot);
  k::residual_add(ctx_, next, xmid, branch);
}

void ViTModel::head_forward(const Tensor& labels, int B, float grad_scale, bool want_grad, int slot) {
  const Segment seg{Segment::Head, -1};
  source_->before_forward(seg);
  Activations& a = *acts_.at(static_cast<size_t>(slot));
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t C = cfg_.hidden, K = cfg_.num_classes;
  Tensor cls = tensor_of(a.cls, dt, {B, C});
  Tensor cls_ln = tensor_of(a.cls_ln, dt, {B, C});
  k::select_cls_forward(ctx_, cls, residual(cfg_.depth, B, slot));
  k::layernorm_forward(ctx_, cls_ln, tensor_of(a.cls_mean, f32, {B}), tensor_of(a.cls_rstd, f32, {B}), cls,
                       param(layout_.norm_w), param(layout_.norm_b), cfg_.layernorm_eps);
  k::matmul_forward(ctx_, logits(B, slot), Tensor(), cls_ln, param(layout_.head_w), param(layout_.head_b));
  Tensor lab(labels.data, labels.dtype, labels.device, {B});
  Tensor dlogits = want_grad ? tensor_of(a.dlogits, dt, {B, K}) : Tensor();
  const bool soft = training_ && (a.extras.labels_b.defined() || compute_.reg.label_smoothing > 0.0f);
  if (!soft) {
    k::softmax_cross_entropy(ctx_, losses(B, slot), predicted(B, slot), dlogits, logits(B, slot), lab, grad_scale);
  } else {
    k::SoftTargets targets;
    if (a.extras.labels_b.defined()) {
      VIT_CHECK(a.extras.labels_b.numel() >= B && a.extras.lambda.numel() >= B, "TrainExtras hold ",
                a.extras.labels_b.numel(), " targets for a micro-batch of ", B);
      targets.labels_b = Tensor(a.extras.labels_b.data, a.extras.labels_b.dtype, a.extras.labels_b.device, {B});
      targets.lambda = Tensor(a.extras.lambda.data, DType::F32, a.extras.lambda.device, {B});
    }
    targets.smoothing = compute_.reg.label_smoothing;
    k::softmax_cross_entropy_soft(ctx_, losses(B, slot), predicted(B, slot), dlogits, logits(B, slot), lab, targets,
                                  grad_scale);
  }
  source_->after_forward(seg);
}

namespace {
// Sets a flag for the length of a scope and restores it.
struct FlagScope {
  bool& flag;
  bool saved;
  FlagScope(bool& f, bool value) : flag(f), saved(f) { flag = value; }
  ~FlagScope() { flag = saved; }
};
}  // namespace

void ViTModel::forward(const Tensor& images, const Tensor& labels, int B, int slot) {
  const FlagScope evaluation(training_, false);
  embed_forward(images, B, slot);
  for (int l = 0; l < cfg_.depth; ++l) block_forward(l, B, slot);
  head_forward(labels, B, 1.0f, false, slot);
}

// ---------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------

void ViTModel::head_backward(int B, int slot) {
  const Segment seg{Segment::Head, -1};
  source_->before_backward(seg);
  FoldScope folds(ctx_);  // the segment's bias and LayerNorm folds: one launch, before its gradients go on
  Activations& a = *acts_.at(static_cast<size_t>(slot));
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t C = cfg_.hidden, K = cfg_.num_classes;
  Tensor dcls_ln = tensor_of(dcls_ln_, dt, {B, C});
  Tensor dcls = tensor_of(dcls_, dt, {B, C});
  const bool acc = !assign_grads_;
  k::matmul_backward(ctx_, dcls_ln, grad(layout_.head_w), grad(layout_.head_b), tensor_of(a.dlogits, dt, {B, K}),
                     tensor_of(a.cls_ln, dt, {B, C}), param(layout_.head_w), acc);
  k::fill(ctx_, dcls, 0.0f);  // layernorm_backward accumulates into dinp
  k::layernorm_backward(ctx_, dcls, grad(layout_.norm_w), grad(layout_.norm_b), dcls_ln, tensor_of(a.cls, dt, {B, C}),
                        param(layout_.norm_w), tensor_of(a.cls_mean, f32, {B}), tensor_of(a.cls_rstd, f32, {B}), acc);
  k::select_cls_backward(ctx_, residual_grad(B), dcls);
  folds.flush();
  source_->after_backward(seg);
}

void ViTModel::block_backward(int l, int B, int slot) {
  const Segment seg{Segment::Block, l};
  source_->before_backward(seg);
  FoldScope folds(ctx_);  // the segment's bias and LayerNorm folds: one launch, before its gradients go on
  if (compute_.recompute) block_forward_compute(l, B, slot);  // rebuild this block's activations from its input
  const BlockParams& p = layout_.blocks[static_cast<size_t>(l)];
  BlockActs& a = acts_for(l, slot);
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t T = cfg_.tokens(), C = cfg_.hidden, Cl = local_hidden(), Fl = local_mlp(), BT = B * T;
  const int NHl = cfg_.heads / layout_.shard().tp_size;
  Tensor dres = residual_grad(B).reshape({BT, C});  // holds d(block output); becomes d(block input)
  Tensor dtmp = tensor_of(dtmp_, dt, {BT, C});
  // fc2's input gradient over the GELU output, which only fc2's weight
  // gradient still reads, and that first (matmul.h); with recompute_gelu in
  // dhidden_, where the GELU output is then made again. GELU's input gradient
  // over fc1's output (gelu.h). This block's activations are spent after its
  // backward (the next forward of this slot writes them again).
  Tensor dh = tensor_of(compute_.recompute_gelu ? dhidden_ : a.fc1, dt, {BT, Fl});
  Tensor dh_pre = tensor_of(a.fc1_pre, dt, {BT, Fl});
  Tensor dqkv = tensor_of(dqkv_in_place_ ? a.qkv : dqkv_, dt, {BT, 3 * Cl});
  Tensor datt = tensor_of(dtmp_, dt, {BT, Cl});  // attention output gradient (dtmp is free at that point)
  Tensor aux(a.att_aux.data(), f32, ctx_.device, {static_cast<int64_t>(a.att_aux.bytes() / 4)});

  // A masked branch (drop path, dropout) sees d out through its masks.
  const bool masked = branch_masked(l);
  Tensor dmasked = masked ? tensor_of(dmasked_, dt, {BT, C}) : Tensor();

  // MLP branch: x_out = xmid + fc2(gelu(fc1(LN2(xmid)))). Replicated biases
  // get their (identical) gradient on every tensor-parallel rank.
  if (masked) apply_branch_masks(dmasked, dres, l, 1, B, slot);
  const Tensor dfc2 = masked ? dmasked : dres;
  const bool acc = !assign_grads_;  // parameter gradients: += or, for a step's first micro-batch, =
  // fc1's bias gradient (the column sums of dh_pre) comes from the GELU
  // backward, which sums dh_pre as it writes it. fc2's (the column sums of
  // dres) from the LayerNorm backward that wrote dres, the next block's LN1
  // (it left them in fc2_bias_sums_), where that block is held here and this
  // branch unmasked; otherwise from matmul_backward.
  if (l == layout_.end_block() - 1) fc2_bias_block_ = -1;  // a new backward pass on this rank
  const bool fc2_bias_summed = fc2_bias_block_ == l;
  fc2_bias_block_ = -1;
  VIT_CHECK(!fc2_bias_summed || !masked, "ViTModel: block ", l, "'s fc2 bias gradient was summed before its masks");
  const Tensor fc2_db = fc2_bias_summed ? Tensor() : grad(p.fc2_b);
  if (!compute_.recompute_gelu) {
    k::matmul_backward(ctx_, dh, grad(p.fc2_w), fc2_db, dfc2, tensor_of(a.fc1, dt, {BT, Fl}), param(p.fc2_w), acc);
    k::gelu_backward(ctx_, dh_pre, tensor_of(a.fc1_pre, dt, {BT, Fl}), dh, grad(p.fc1_b), acc);
  } else {
    // The GELU output was not kept: fc2's input gradient first, then one
    // pass makes GELU's input gradient and, over dh, the GELU output again
    // (the forward's bits), then fc2's weight gradient from it. The same
    // GEMMs on the same inputs as above: the gradients are the same bits.
    k::matmul_backward(ctx_, dh, Tensor(), Tensor(), dfc2, Tensor(), param(p.fc2_w));
    k::gelu_backward_recompute(ctx_, dh_pre, dh, tensor_of(a.fc1_pre, dt, {BT, Fl}), dh, grad(p.fc1_b), acc);
    k::matmul_backward(ctx_, Tensor(), grad(p.fc2_w), fc2_db, dfc2, dh, param(p.fc2_w), acc);
  }
  // Added with the block's deferred folds (its flush below); the next
  // block's sums, which this block's LN1 backward makes, go to the other half.
  if (fc2_bias_summed) k::add_gradient(ctx_, grad(p.fc2_b), fc2_bias_half(l), acc);
  // With recompute_norm, LN2's output made again for fc1's weight gradient
  // (the forward's kernel on the kept xmid: the same bits and statistics).
  Tensor ln2 = tensor_of(compute_.recompute_norm ? norm_ : a.ln2, dt, {BT, C});
  if (compute_.recompute_norm) {
    k::layernorm_forward(ctx_, ln2, tensor_of(a.ln2_mean, f32, {BT}), tensor_of(a.ln2_rstd, f32, {BT}),
                         tensor_of(a.xmid, dt, {BT, C}), param(p.ln2_w), param(p.ln2_b), cfg_.layernorm_eps);
  }
  k::matmul_backward(ctx_, dtmp, grad(p.fc1_w), Tensor(), dh_pre, ln2, param(p.fc1_w), acc);
  reduce_over_tp(dtmp);  // backward of copy_to_tensor_parallel_region
  // proj's bias gradient, the column sums of dres after this LayerNorm
  // backward, from its kernel (unless the branch is masked).
  k::layernorm_backward(ctx_, dres, grad(p.ln2_w), grad(p.ln2_b), dtmp, tensor_of(a.xmid, dt, {BT, C}),
                        param(p.ln2_w), tensor_of(a.ln2_mean, f32, {BT}), tensor_of(a.ln2_rstd, f32, {BT}), acc,
                        masked ? Tensor() : grad(p.proj_b), acc);
  // Attention branch: xmid = x + proj(attn(qkv(LN1(x)))).
  if (masked) apply_branch_masks(dmasked, dres, l, 0, B, slot);
  k::matmul_backward(ctx_, datt, grad(p.proj_w), masked ? grad(p.proj_b) : Tensor(), masked ? dmasked : dres,
                     tensor_of(a.att, dt, {BT, Cl}), param(p.proj_w), acc);
  // The QKV bias gradient (the column sums of dqkv) comes from the attention
  // backward, whose short-sequence kernel sums dqkv as it writes it.
  k::attention_backward(ctx_, dqkv.reshape({B, T, 3 * Cl}), datt.reshape({B, T, Cl}),
                        tensor_of(a.qkv, dt, {B, T, 3 * Cl}), tensor_of(a.att, dt, {B, T, Cl}), aux, NHl,
                        compute_.attention, grad(p.qkv_b), acc);
  // LN1's output likewise, from the block input, for the QKV weight gradient.
  Tensor ln1 = tensor_of(compute_.recompute_norm ? norm_ : a.ln1, dt, {BT, C});
  if (compute_.recompute_norm) {
    k::layernorm_forward(ctx_, ln1, tensor_of(a.ln1_mean, f32, {BT}), tensor_of(a.ln1_rstd, f32, {BT}),
                         residual(l, B, slot).reshape({BT, C}), param(p.ln1_w), param(p.ln1_b), cfg_.layernorm_eps);
  }
  k::matmul_backward(ctx_, dtmp, grad(p.qkv_w), Tensor(), dqkv, ln1, param(p.qkv_w), acc);
  reduce_over_tp(dtmp);  // backward of copy_to_tensor_parallel_region
  // dres is now block l - 1's output gradient: where that block is held here
  // and its MLP branch unmasked, its fc2 bias gradient (dres's column sums)
  // comes out of this kernel into fc2_bias_sums_ (see the MLP branch above).
  const bool sum_fc2_bias = l - 1 >= layout_.first_block() && !branch_masked(l - 1) && fc2_bias_sums_.bytes() > 0;
  k::layernorm_backward(ctx_, dres, grad(p.ln1_w), grad(p.ln1_b), dtmp, residual(l, B, slot).reshape({BT, C}),
                        param(p.ln1_w), tensor_of(a.ln1_mean, f32, {BT}), tensor_of(a.ln1_rstd, f32, {BT}), acc,
                        sum_fc2_bias ? fc2_bias_half(l - 1) : Tensor(), false);
  if (sum_fc2_bias) fc2_bias_block_ = l - 1;
  folds.flush();
  source_->after_backward(seg);
}

void ViTModel::embed_backward(int B, int slot) {
  const Segment seg{Segment::Embed, -1};
  source_->before_backward(seg);
  FoldScope folds(ctx_);  // the segment's bias and LayerNorm folds: one launch, before its gradients go on
  Activations& a = *acts_.at(static_cast<size_t>(slot));
  const DType dt = compute_.dtype;
  const int64_t NP = cfg_.num_patches(), C = cfg_.hidden;
  Tensor dpe = tensor_of(dtmp_, dt, {B * NP, C});  // the patch projection's gradient (dtmp_ is free here)
  if (training_ && compute_.reg.hidden_dropout > 0.0f) {  // the embeddings' dropout, backward
    Tensor dx0 = residual_grad(B).reshape({B, cfg_.tokens() * C});
    k::dropout(ctx_, dx0, dx0, 1.0f - compute_.reg.hidden_dropout, site_key(cfg_.depth, 4, slot),
               a.extras.first_sample);
  }
  const bool acc = !assign_grads_;
  k::embed_tokens_backward(ctx_, dpe.reshape({B, NP, C}), grad(layout_.cls_token), grad(layout_.pos_embed),
                           residual_grad(B), acc);
  k::matmul_backward(ctx_, Tensor(), grad(layout_.patch_w), grad(layout_.patch_b), dpe,
                     tensor_of(a.patches, dt, {B * NP, cfg_.patch_dim()}), param(layout_.patch_w), acc);
  folds.flush();
  source_->after_backward(seg);
}

void ViTModel::forward_backward(const Tensor& images, const Tensor& labels, int B, float grad_scale, int slot) {
  const FlagScope training(training_, true);
  TrainExtras& extras = acts_.at(static_cast<size_t>(slot))->extras;
  if (extras.noise_key == 0 && compute_.reg.any_noise()) {
    extras.noise_key = mix_seed(compute_.reg.seed, 0x6e6f697365ull, ++auto_noise_);
  }
  embed_forward(images, B, slot);
  for (int l = 0; l < cfg_.depth; ++l) block_forward(l, B, slot);
  head_forward(labels, B, grad_scale, true, slot);
  head_backward(B, slot);
  for (int l = cfg_.depth - 1; l >= 0; --l) block_backward(l, B, slot);
  embed_backward(B, slot);
  extras = TrainExtras();  // consumed: the next micro-batch brings its own
}

}  // namespace vit::model
