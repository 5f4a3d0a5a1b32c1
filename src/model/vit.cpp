#include "model/vit.h"

#include "kernels/attention.h"
#include "kernels/cast.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"

namespace vit::model {

namespace k = vit::kernels;

// Activations one block keeps for its backward pass.
struct ViTModel::BlockActs {
  Buffer ln1, ln1_mean, ln1_rstd;  // (B, T, C), (B*T), (B*T)
  Buffer qkv;                      // (B, T, 3C)
  Buffer att, att_aux;             // (B, T, C), attention_aux_bytes
  Buffer xmid;                     // (B, T, C): x + attention branch
  Buffer ln2, ln2_mean, ln2_rstd;
  Buffer fc1_pre, fc1;             // (B, T, MLP): before and after GELU
  Buffer branch;                   // (B, T, C): proj / fc2 output before the residual add
};

ViTModel::ViTModel(const ViTConfig& cfg, const ComputeConfig& compute, const Context& ctx, int max_batch)
    : cfg_(cfg), compute_(compute), layout_(cfg), ctx_(ctx), max_batch_(max_batch) {
  VIT_CHECK(max_batch > 0, "max_batch must be positive");
  VIT_CHECK(ctx.device == Device::CUDA || compute.dtype == DType::F32,
            "the CPU computes in fp32 only; precision ", dtype_name(compute.dtype), " needs the GPU");
  const int64_t B = max_batch, T = cfg.tokens(), C = cfg.hidden, M = cfg.mlp_dim, NH = cfg.heads;
  const int64_t NP = cfg.num_patches(), P = cfg.patch_dim(), K = cfg.num_classes;
  const DType dt = compute.dtype, f32 = DType::F32;

  // The attention path that runs this shape (every head size runs; the
  // owner of the model reports attention_note() once).
  compute_.attention = k::resolve_attention(ctx.device, compute.attention, dt, C, NH, &attention_note_);
  if (compute_.attention == k::AttentionImpl::CuDNN) {
    std::string reasons;
    if (!k::cudnn_attention_available(ctx, dt, B, T, C, NH, &reasons)) {
      compute_.attention = k::resolve_attention(ctx.device, k::AttentionImpl::Cublas, dt, C, NH);
      attention_note_ = str_cat("cuDNN builds no fused attention plan for batch ", B, ", ", T, " tokens, ", NH,
                                " heads of ", C / NH, " (", reasons, "); attention runs on the ",
                                k::attention_impl_name(compute_.attention), " path instead");
    }
  }

  for (int l = 0; l <= cfg.depth; ++l) residuals_.push_back(alloc(B * T * C, dt));
  // With recompute only the block inputs (residuals) persist; one set of
  // block activations is rebuilt for each block during backward.
  const int sets = compute.recompute ? 1 : cfg.depth;
  // Rounded up to whole fp32 words: the blocks view aux as fp32 (B*NH*T*T
  // 16-bit probabilities can be an odd number of halves).
  const size_t aux_bytes = (k::attention_aux_bytes(ctx.device, compute_.attention, dt, B, T, NH) + 3) / 4 * 4;
  for (int s = 0; s < sets; ++s) {
    auto a = std::make_unique<BlockActs>();
    a->ln1 = alloc(B * T * C, dt);
    a->ln1_mean = alloc(B * T, f32);
    a->ln1_rstd = alloc(B * T, f32);
    a->qkv = alloc(B * T * 3 * C, dt);
    a->att = alloc(B * T * C, dt);
    a->att_aux = Buffer(aux_bytes, ctx.device);
    activation_bytes_ += aux_bytes;
    a->xmid = alloc(B * T * C, dt);
    a->ln2 = alloc(B * T * C, dt);
    a->ln2_mean = alloc(B * T, f32);
    a->ln2_rstd = alloc(B * T, f32);
    a->fc1_pre = alloc(B * T * M, dt);
    a->fc1 = alloc(B * T * M, dt);
    a->branch = alloc(B * T * C, dt);
    blocks_.push_back(std::move(a));
  }
  patches_ = alloc(B * NP * P, dt);
  patch_emb_ = alloc(B * NP * C, dt);
  cls_ = alloc(B * C, dt);
  cls_ln_ = alloc(B * C, dt);
  cls_mean_ = alloc(B, f32);
  cls_rstd_ = alloc(B, f32);
  logits_ = alloc(B * K, dt);
  dlogits_ = alloc(B * K, dt);
  losses_ = alloc(B, f32);
  predicted_ = Buffer(static_cast<size_t>(B) * sizeof(int32_t), ctx.device);
  dres_ = alloc(B * T * C, dt);
  dtmp_ = alloc(B * T * C, dt);
  dqkv_ = alloc(B * T * 3 * C, dt);
  dhidden_ = alloc(B * T * M, dt);
  dhidden2_ = alloc(B * T * M, dt);
  dcls_ = alloc(B * C, dt);
  dcls_ln_ = alloc(B * C, dt);
}

ViTModel::~ViTModel() = default;

Buffer ViTModel::alloc(size_t elems, DType t) {
  activation_bytes_ += elems * dtype_size(t);
  return Buffer(elems * dtype_size(t), ctx_.device);
}

void ViTModel::bind(const Tensor& params, const Tensor& grads) {
  VIT_CHECK(params.numel() == layout_.total(), "parameter buffer holds ", params.numel(), " values, the layout ",
            layout_.total());
  VIT_CHECK(params.dtype == compute_.dtype, "parameters must be in the compute dtype ", dtype_name(compute_.dtype));
  VIT_CHECK(params.device == ctx_.device, "parameters live on the wrong device");
  if (grads.defined()) {
    VIT_CHECK(grads.numel() == layout_.total() && grads.dtype == DType::F32 && grads.device == ctx_.device,
              "gradient buffer must be fp32, on the model's device, with ", layout_.total(), " values");
  }
  params_ = params;
  grads_ = grads;
}

namespace {
Tensor shaped(void* base, DType t, Device d, const ParamInfo& p) {
  char* ptr = static_cast<char*>(base) + p.offset * static_cast<int64_t>(dtype_size(t));
  switch (p.shape.size()) {
    case 1: return Tensor(ptr, t, d, {p.shape[0]});
    case 2: return Tensor(ptr, t, d, {p.shape[0], p.shape[1]});
    default: VIT_THROW("parameter ", p.name, " has an unexpected rank ", p.shape.size());
  }
}
}  // namespace

Tensor ViTModel::param(int index) const {
  VIT_CHECK(params_.defined(), "ViTModel: bind() the parameters before running");
  return shaped(params_.data, params_.dtype, params_.device, layout_[index]);
}

Tensor ViTModel::grad(int index) const {
  VIT_CHECK(grads_.defined(), "ViTModel: bind() a gradient buffer before backward");
  return shaped(grads_.data, DType::F32, grads_.device, layout_[index]);
}

ViTModel::BlockActs& ViTModel::acts_for(int l) { return *blocks_[compute_.recompute ? 0 : static_cast<size_t>(l)]; }

Tensor ViTModel::residual(int l, int B) const {
  return tensor_of(residuals_[static_cast<size_t>(l)], compute_.dtype, {B, cfg_.tokens(), cfg_.hidden});
}

Tensor ViTModel::residual_grad(int B) const { return tensor_of(dres_, compute_.dtype, {B, cfg_.tokens(), cfg_.hidden}); }

Tensor ViTModel::losses(int B) const { return tensor_of(losses_, DType::F32, {B}); }

Tensor ViTModel::predicted(int B) const {
  return Tensor(predicted_.data(), DType::I32, ctx_.device, {B});
}

Tensor ViTModel::logits(int B) const { return tensor_of(logits_, compute_.dtype, {B, cfg_.num_classes}); }

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

void ViTModel::embed_forward(const Tensor& images, int B) {
  VIT_CHECK(B > 0 && B <= max_batch_, "batch ", B, " exceeds the model's max_batch ", max_batch_);
  VIT_CHECK(images.ndim == 4 && images.dim(0) >= B && images.dim(1) == cfg_.image_size &&
                images.dim(2) == cfg_.image_size && images.dim(3) == cfg_.channels,
            "images must be (B, ", cfg_.image_size, ", ", cfg_.image_size, ", ", cfg_.channels, "), got ",
            images.shape_str());
  const DType dt = compute_.dtype;
  const int64_t NP = cfg_.num_patches(), C = cfg_.hidden;
  Tensor imgs(images.data, images.dtype, images.device, {B, images.dim(1), images.dim(2), images.dim(3)});
  Tensor patches = tensor_of(patches_, dt, {B * NP, cfg_.patch_dim()});
  Tensor pe = tensor_of(patch_emb_, dt, {B * NP, C});
  k::patchify(ctx_, patches.reshape({B, NP, cfg_.patch_dim()}), imgs, cfg_.patch_size);
  k::matmul_forward(ctx_, pe, Tensor(), patches, param(layout_.patch_w), param(layout_.patch_b));
  k::embed_tokens_forward(ctx_, residual(0, B), pe.reshape({B, NP, C}), param(layout_.cls_token),
                          param(layout_.pos_embed));
}

void ViTModel::block_forward(int l, int B) {
  const BlockParams& p = layout_.blocks[static_cast<size_t>(l)];
  BlockActs& a = acts_for(l);
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t T = cfg_.tokens(), C = cfg_.hidden, M = cfg_.mlp_dim, BT = B * T;
  Tensor x = residual(l, B).reshape({BT, C});
  Tensor ln1 = tensor_of(a.ln1, dt, {BT, C});
  Tensor qkv = tensor_of(a.qkv, dt, {BT, 3 * C});
  Tensor att = tensor_of(a.att, dt, {BT, C});
  Tensor xmid = tensor_of(a.xmid, dt, {BT, C});
  Tensor ln2 = tensor_of(a.ln2, dt, {BT, C});
  Tensor fc1_pre = tensor_of(a.fc1_pre, dt, {BT, M});
  Tensor fc1 = tensor_of(a.fc1, dt, {BT, M});
  Tensor branch = tensor_of(a.branch, dt, {BT, C});
  Tensor aux(a.att_aux.data(), f32, ctx_.device, {static_cast<int64_t>(a.att_aux.bytes() / 4)});

  k::layernorm_forward(ctx_, ln1, tensor_of(a.ln1_mean, f32, {BT}), tensor_of(a.ln1_rstd, f32, {BT}), x, param(p.ln1_w),
                       param(p.ln1_b), cfg_.layernorm_eps);
  k::matmul_forward(ctx_, qkv, Tensor(), ln1, param(p.qkv_w), param(p.qkv_b));
  k::attention_forward(ctx_, att.reshape({B, T, C}), aux, qkv.reshape({B, T, 3 * C}), cfg_.heads,
                       compute_.attention);
  k::matmul_forward(ctx_, branch, Tensor(), att, param(p.proj_w), param(p.proj_b));
  k::residual_add(ctx_, xmid, x, branch);
  k::layernorm_forward(ctx_, ln2, tensor_of(a.ln2_mean, f32, {BT}), tensor_of(a.ln2_rstd, f32, {BT}), xmid, param(p.ln2_w),
                       param(p.ln2_b), cfg_.layernorm_eps);
  k::matmul_forward(ctx_, fc1, fc1_pre, ln2, param(p.fc1_w), param(p.fc1_b));  // GELU epilogue
  k::matmul_forward(ctx_, branch, Tensor(), fc1, param(p.fc2_w), param(p.fc2_b));
  k::residual_add(ctx_, residual(l + 1, B).reshape({BT, C}), xmid, branch);
}

void ViTModel::head_forward(const Tensor& labels, int B, float grad_scale, bool want_grad) {
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t C = cfg_.hidden, K = cfg_.num_classes;
  Tensor cls = tensor_of(cls_, dt, {B, C});
  Tensor cls_ln = tensor_of(cls_ln_, dt, {B, C});
  k::select_cls_forward(ctx_, cls, residual(cfg_.depth, B));
  k::layernorm_forward(ctx_, cls_ln, tensor_of(cls_mean_, f32, {B}), tensor_of(cls_rstd_, f32, {B}), cls, param(layout_.norm_w),
                       param(layout_.norm_b), cfg_.layernorm_eps);
  k::matmul_forward(ctx_, logits(B), Tensor(), cls_ln, param(layout_.head_w), param(layout_.head_b));
  Tensor lab(labels.data, labels.dtype, labels.device, {B});
  k::softmax_cross_entropy(ctx_, losses(B), predicted(B), want_grad ? tensor_of(dlogits_, dt, {B, K}) : Tensor(),
                           logits(B), lab, grad_scale);
}

void ViTModel::forward(const Tensor& images, const Tensor& labels, int B) {
  embed_forward(images, B);
  for (int l = 0; l < cfg_.depth; ++l) block_forward(l, B);
  head_forward(labels, B, 1.0f, false);
}

// ---------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------

void ViTModel::head_backward(int B) {
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t C = cfg_.hidden, K = cfg_.num_classes;
  Tensor dcls_ln = tensor_of(dcls_ln_, dt, {B, C});
  Tensor dcls = tensor_of(dcls_, dt, {B, C});
  k::matmul_backward(ctx_, dcls_ln, grad(layout_.head_w), grad(layout_.head_b), tensor_of(dlogits_, dt, {B, K}),
                     tensor_of(cls_ln_, dt, {B, C}), param(layout_.head_w));
  k::fill(ctx_, dcls, 0.0f);  // layernorm_backward accumulates into dinp
  k::layernorm_backward(ctx_, dcls, grad(layout_.norm_w), grad(layout_.norm_b), dcls_ln, tensor_of(cls_, dt, {B, C}),
                        param(layout_.norm_w), tensor_of(cls_mean_, f32, {B}), tensor_of(cls_rstd_, f32, {B}));
  k::select_cls_backward(ctx_, residual_grad(B), dcls);
}

void ViTModel::block_backward(int l, int B) {
  if (compute_.recompute) block_forward(l, B);  // rebuild this block's activations from its input
  const BlockParams& p = layout_.blocks[static_cast<size_t>(l)];
  BlockActs& a = acts_for(l);
  const DType dt = compute_.dtype, f32 = DType::F32;
  const int64_t T = cfg_.tokens(), C = cfg_.hidden, M = cfg_.mlp_dim, BT = B * T;
  Tensor dres = residual_grad(B).reshape({BT, C});  // holds d(block output); becomes d(block input)
  Tensor dtmp = tensor_of(dtmp_, dt, {BT, C});
  Tensor dh = tensor_of(dhidden_, dt, {BT, M});
  Tensor dh_pre = tensor_of(dhidden2_, dt, {BT, M});
  Tensor dqkv = tensor_of(dqkv_, dt, {BT, 3 * C});
  Tensor aux(a.att_aux.data(), f32, ctx_.device, {static_cast<int64_t>(a.att_aux.bytes() / 4)});

  // MLP branch: x_out = xmid + fc2(gelu(fc1(LN2(xmid)))).
  k::matmul_backward(ctx_, dh, grad(p.fc2_w), grad(p.fc2_b), dres, tensor_of(a.fc1, dt, {BT, M}), param(p.fc2_w));
  k::gelu_backward(ctx_, dh_pre, tensor_of(a.fc1_pre, dt, {BT, M}), dh);
  k::matmul_backward(ctx_, dtmp, grad(p.fc1_w), grad(p.fc1_b), dh_pre, tensor_of(a.ln2, dt, {BT, C}), param(p.fc1_w));
  k::layernorm_backward(ctx_, dres, grad(p.ln2_w), grad(p.ln2_b), dtmp, tensor_of(a.xmid, dt, {BT, C}), param(p.ln2_w),
                        tensor_of(a.ln2_mean, f32, {BT}), tensor_of(a.ln2_rstd, f32, {BT}));
  // Attention branch: xmid = x + proj(attn(qkv(LN1(x)))).
  k::matmul_backward(ctx_, dtmp, grad(p.proj_w), grad(p.proj_b), dres, tensor_of(a.att, dt, {BT, C}), param(p.proj_w));
  k::attention_backward(ctx_, dqkv.reshape({B, T, 3 * C}), dtmp.reshape({B, T, C}),
                        tensor_of(a.qkv, dt, {B, T, 3 * C}), tensor_of(a.att, dt, {B, T, C}), aux, cfg_.heads,
                        compute_.attention);
  k::matmul_backward(ctx_, dtmp, grad(p.qkv_w), grad(p.qkv_b), dqkv, tensor_of(a.ln1, dt, {BT, C}), param(p.qkv_w));
  k::layernorm_backward(ctx_, dres, grad(p.ln1_w), grad(p.ln1_b), dtmp, residual(l, B).reshape({BT, C}),
                        param(p.ln1_w), tensor_of(a.ln1_mean, f32, {BT}), tensor_of(a.ln1_rstd, f32, {BT}));
}

void ViTModel::embed_backward(int B) {
  const DType dt = compute_.dtype;
  const int64_t NP = cfg_.num_patches(), C = cfg_.hidden;
  Tensor dpe = tensor_of(patch_emb_, dt, {B * NP, C});  // the forward value is no longer needed
  k::embed_tokens_backward(ctx_, dpe.reshape({B, NP, C}), grad(layout_.cls_token), grad(layout_.pos_embed),
                           residual_grad(B));
  k::matmul_backward(ctx_, Tensor(), grad(layout_.patch_w), grad(layout_.patch_b), dpe,
                     tensor_of(patches_, dt, {B * NP, cfg_.patch_dim()}), param(layout_.patch_w));
}

void ViTModel::forward_backward(const Tensor& images, const Tensor& labels, int B, float grad_scale,
                                const GradHook& hook) {
  embed_forward(images, B);
  for (int l = 0; l < cfg_.depth; ++l) block_forward(l, B);
  head_forward(labels, B, grad_scale, true);

  head_backward(B);
  if (hook) hook(layout_.head_range().first, layout_.head_range().second);
  for (int l = cfg_.depth - 1; l >= 0; --l) {
    block_backward(l, B);
    if (hook) hook(layout_.block_range(l).first, layout_.block_range(l).second);
  }
  embed_backward(B);
  if (hook) hook(layout_.embed_range().first, layout_.embed_range().second);
}

}  // namespace vit::model
