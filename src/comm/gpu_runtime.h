// The few CUDA runtime calls comm needs, behind plain declarations so that
// no header of comm includes a CUDA header (CPU builds compile unchanged).
//
// gpu_runtime_cuda.cpp implements them in CUDA builds; gpu_runtime.cpp gives
// CPU builds versions that throw (GPU data cannot reach a CPU build anyway:
// core's Buffer refuses to allocate it).
#pragma once

#include <string>

namespace vit::comm::gpu {

// Waits for the work queued on `stream` (a cudaStream_t as void*). nullptr
// does nothing: the synchronous copies comm makes run on the legacy default
// stream, which already waits for earlier work of the blocking streams.
void synchronize_stream(void* stream);

// cudaSetDevice / cudaGetDevice.
void set_device(int index);
int current_device();

// The PCI bus id of GPU `index` ("0000:65:00.0"): what tells two ranks that
// they were given the same physical GPU, whatever CUDA_VISIBLE_DEVICES says.
std::string pci_bus_id(int index);

}  // namespace vit::comm::gpu
