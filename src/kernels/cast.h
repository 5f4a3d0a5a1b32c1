// Element-type conversions (fp32 <-> bf16 <-> fp16), round to nearest even.
// dst and src have the same element count; dtypes may be equal (a copy).
// fill: every element of x set to value (in x's dtype).
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, cast, const Context& ctx, Tensor dst, const Tensor& src)
VIT_DECLARE_KERNEL(void, fill, const Context& ctx, Tensor x, float value)

inline void cast(const Context& ctx, Tensor dst, const Tensor& src) { VIT_DISPATCH(ctx, cast, ctx, dst, src); }
inline void fill(const Context& ctx, Tensor x, float value) { VIT_DISPATCH(ctx, fill, ctx, x, value); }

}  // namespace vit::kernels
