// GPU facts for the manifest and the power meter (CUDA builds only).
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include <nlohmann/json.hpp>

#include "core/cuda_check.h"

namespace vit::train {

nlohmann::json gpu_hardware(int device_index) {
  cudaDeviceProp prop{};
  VIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  int driver = 0, runtime = 0, nccl = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  ncclGetVersion(&nccl);
  auto version = [](int v, int major_div, int minor_div) {
    return std::to_string(v / major_div) + "." + std::to_string((v % major_div) / minor_div);
  };
  const size_t cudnn = cudnnGetVersion();
  return {{"gpu_name", prop.name},
          {"gpu_memory_bytes", prop.totalGlobalMem},
          {"gpu_sm_count", prop.multiProcessorCount},
          {"driver", version(driver, 1000, 10)},
          {"cuda_runtime", version(runtime, 1000, 10)},
          {"cudnn", std::to_string(cudnn / 10000) + "." + std::to_string((cudnn % 10000) / 100) + "." +
                        std::to_string(cudnn % 100)},
          {"nccl", std::to_string(nccl / 10000) + "." + std::to_string((nccl % 10000) / 100) + "." +
                       std::to_string(nccl % 100)}};
}

std::string gpu_pci_bus_id(int device_index) {
  char id[32] = {};
  VIT_CUDA_CHECK(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof id), device_index));
  return id;
}

}  // namespace vit::train
