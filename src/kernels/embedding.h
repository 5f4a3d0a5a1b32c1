// Patch embedding and the token sequence around it.
//
// The 16x16 stride-16 convolution of the ViT is a GEMM over unfolded patches:
// patchify() unfolds and normalises, matmul_forward() with the conv weight
// viewed as (C, P) does the rest.
//
// patchify:   patches (B, NP, P) from images uint8 (B, H, W, 3) (NHWC, as
//             stored by vit_data_prep), normalised as the ViT image
//             processor: (x / 255 - 0.5) / 0.5. Patch i = py * (W/ps) + px;
//             P index = c*ps*ps + ky*ps + kx, the flattening of the Conv2d
//             weight (C, 3, ps, ps). No backward: images need no gradient.
// embed_tokens_forward:  x (B, T, C), T = NP + 1:
//             x[b, 0]   = cls (C) + pos[0]
//             x[b, 1+i] = patch_emb[b, i] (B, NP, C) + pos[1+i]   pos (T, C)
// embed_tokens_backward: dpatch_emb (B, NP, C) = dx[:, 1:]        assigned
//             dcls (C) += sum_b dx[b, 0]; dpos (T, C) += sum_b dx[b]  accumulated (fp32;
//             assigned with accumulate = false)
// select_cls_forward:  out (B, C) = x[:, 0, :]   (the head reads the class token)
// select_cls_backward: dx (B, T, C): dx[:, 0] = dout, other tokens 0   assigned
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, patchify, const Context& ctx, Tensor patches, const Tensor& images, int patch_size)
VIT_DECLARE_KERNEL(void, embed_tokens_forward, const Context& ctx, Tensor x, const Tensor& patch_emb,
                   const Tensor& cls, const Tensor& pos)
VIT_DECLARE_KERNEL(void, embed_tokens_backward, const Context& ctx, Tensor dpatch_emb, Tensor dcls, Tensor dpos,
                   const Tensor& dx, bool accumulate = true)
VIT_DECLARE_KERNEL(void, select_cls_forward, const Context& ctx, Tensor out, const Tensor& x)
VIT_DECLARE_KERNEL(void, select_cls_backward, const Context& ctx, Tensor dx, const Tensor& dout)

inline void patchify(const Context& ctx, Tensor patches, const Tensor& images, int patch_size) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(patches, images), patchify, ctx, patches, images, patch_size);
}
inline void embed_tokens_forward(const Context& ctx, Tensor x, const Tensor& patch_emb, const Tensor& cls,
                                 const Tensor& pos) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(x, patch_emb, cls, pos), embed_tokens_forward, ctx, x, patch_emb, cls, pos);
}
inline void embed_tokens_backward(const Context& ctx, Tensor dpatch_emb, Tensor dcls, Tensor dpos,
                                  const Tensor& dx, bool accumulate = true) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(dpatch_emb, dcls, dpos, dx), embed_tokens_backward, ctx, dpatch_emb, dcls, dpos,
                     dx, accumulate);
}
inline void select_cls_forward(const Context& ctx, Tensor out, const Tensor& x) {
  // Reads the B class-token rows of x (as many values as out).
  VIT_DISPATCH_BYTES(ctx, 2.0 * tensor_bytes(out), select_cls_forward, ctx, out, x);
}
inline void select_cls_backward(const Context& ctx, Tensor dx, const Tensor& dout) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(dx, dout), select_cls_backward, ctx, dx, dout);
}

}  // namespace vit::kernels
