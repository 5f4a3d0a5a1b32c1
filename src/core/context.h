// Where kernels run: the device, and for the GPU the stream and library handles.
//
// GpuHandles (cuBLASLt and cuDNN handles, workspaces, cached plans) is
// defined by src/kernels/gpu_context.h; core only carries the pointer so that
// code without CUDA compiles unchanged.
#pragma once

#include "core/device.h"

namespace vit {

struct GpuHandles;

struct Context {
  Device device = Device::CPU;
  void* stream = nullptr;      // cudaStream_t when device == CUDA
  GpuHandles* gpu = nullptr;   // owned elsewhere (kernels/gpu_context.h)

  bool on_gpu() const { return device == Device::CUDA; }
};

}  // namespace vit
