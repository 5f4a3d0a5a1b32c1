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
// does nothing: a caller that passes no stream promises that the data is
// ready (every stream of vit_hpc is non-blocking, so nothing orders the
// legacy default stream after them).
void synchronize_stream(void* stream);

// set_device makes `index` this process's GPU for every thread (core's
// set_home_gpu); current_device is cudaGetDevice.
void set_device(int index);
int current_device();

// The PCI bus id of GPU `index` ("0000:65:00.0"): what tells two ranks that
// they were given the same physical GPU, whatever CUDA_VISIBLE_DEVICES says.
std::string pci_bus_id(int index);

}  // namespace vit::comm::gpu
