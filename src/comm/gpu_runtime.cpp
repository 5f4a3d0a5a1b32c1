// CPU-build side of gpu_runtime.h: these are unreachable in a CPU build unless
// a caller hands comm GPU data, which is then a clear error, not a crash.
#include "comm/gpu_runtime.h"

#include "core/error.h"

#ifndef VIT_WITH_CUDA
namespace vit::comm::gpu {

void synchronize_stream(void* stream) {
  VIT_CHECK(stream == nullptr, "a CUDA stream was given to comm, but vit_hpc was built without CUDA");
}

void set_device(int index) { VIT_THROW("cannot select GPU ", index, ": vit_hpc was built without CUDA"); }

int current_device() { return -1; }

std::string pci_bus_id(int index) { VIT_THROW("no PCI bus id for GPU ", index, ": vit_hpc was built without CUDA"); }

}  // namespace vit::comm::gpu
#endif
