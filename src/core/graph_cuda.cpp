// CUDA side of graph.h (compiled only when VIT_WITH_CUDA).
#include <string>

#include "core/cuda_check.h"
#include "core/graph.h"

namespace vit {

void cuda_capture_begin(void* stream) {
  // Thread-local: another thread's CUDA calls (gemini's host workers) are
  // not affected; this thread may not make unsafe calls while capturing.
  VIT_CUDA_CHECK(cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal));
}

// Ends the capture; returns the instantiated graph, or null with the reason
// in *why. keep = false (the work threw while capturing: the graph is
// incomplete) discards it. Every error of a failed capture is cleared
// before returning.
void* cuda_capture_end(void* stream, bool keep, std::string* why) {
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
  if (end != cudaSuccess || graph == nullptr || !keep) {
    if (graph) cudaGraphDestroy(graph);
    if (keep) *why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
    (void)cudaGetLastError();
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (inst != cudaSuccess) {
    *why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(inst);
    (void)cudaGetLastError();
    return nullptr;
  }
  return exec;
}

void cuda_graph_launch(void* exec, void* stream) {
  VIT_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream)));
}

void cuda_graph_destroy(void* exec) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)); }

}  // namespace vit
