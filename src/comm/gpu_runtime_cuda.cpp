// CUDA side of gpu_runtime.h (compiled only in CUDA builds).
#include <cuda_runtime.h>

#include "comm/gpu_runtime.h"
#include "core/cuda_check.h"
#include "core/device.h"

namespace vit::comm::gpu {

void synchronize_stream(void* stream) {
  if (stream == nullptr) return;
  VIT_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void set_device(int index) { set_home_gpu(index); }

int current_device() {
  int index = -1;
  VIT_CUDA_CHECK(cudaGetDevice(&index));
  return index;
}

std::string pci_bus_id(int index) {
  char id[64] = {};
  VIT_CUDA_CHECK(cudaDeviceGetPCIBusId(id, sizeof(id), index));
  return std::string(id);
}

}  // namespace vit::comm::gpu
