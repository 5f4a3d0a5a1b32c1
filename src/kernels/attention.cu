// Multi-head self-attention core on the GPU (see attention.h): two paths.
//
// 1. cuDNN fused SDPA (AttentionImpl::CuDNN, bf16 and fp16), through the
//    backend graph API (cudnn_graph.h; no cudnn_frontend). Flash-attention
//    kernels that never write the (T, T) scores to memory.
//    Forward: on Hopper, where the shape fits (bf16/fp16, head size 64, up
//    to 256 tokens), the project's wgmma kernel (attention_sm90a.h: keys
//    padded to 16, not cuDNN's 64; the same statistics); otherwise, or with
//    GpuRuntime::set_attention_forward_wgmma(false), cuDNN 9.13+'s single
//    SDPA operation (CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR) with
//    softmax statistics.
//    Backward: by default the project's short-sequence kernel where it fits
//    (attention_short.h: bf16/fp16, head size 64, up to 224 tokens; 20-23%
//    faster than cuDNN's at ViT-B/16; on Hopper its wgmma form,
//    attention_sm90a.h, the same bits ~15% faster again); otherwise cuDNN's,
//    as follows.
//    The single SDPA_BWD operation (9.17+) has no engine on Hopper
//    (graph finalisation fails), so the backward is the graph of generic
//    matmul / pointwise / reduction / reshape operations that cuDNN's fused
//    flash-attention backward engine recognises (build_sdpa_backward_composite
//    says which). Two forms: without an fp32 dQ accumulator the engine runs
//    its deterministic algorithm (the default; bit-identical reruns), with one
//    it adds dQ with atomics (GpuRuntime::set_sdpa_deterministic(false);
//    about 10% faster at ViT-B/16 batch 64).
//    Layout: Q, K and V are described straight inside the interleaved qkv
//    buffer by strides, dims (B, NH, T, HS) with strides (T*3C, HS, 3C, 1) and
//    base pointers qkv, qkv + C, qkv + 2C; O and dO use (T*C, HS, C, 1) into
//    (B, T, C); dQ/dK/dV land in dqkv with the qkv strides: no transpose
//    copies. The forward's statistics (natural log-sum-exp of each scaled score
//    row, (B, NH, T) fp32) are the aux that the backward reads.
//    Operation graph, heuristics and execution plan are built once per
//    (B, T, NH, HS, dtype, direction, determinism) and cached in GpuHandles;
//    a call then only packs the pointers and executes (capturable in a CUDA
//    graph; the capture tests in tests/kernels_gpu check it).
//    fp32 has no flash kernel in cuDNN: with fp32 the CuDNN choice runs the
//    cuBLAS path below, and attention_aux_bytes() sizes aux for it
//    (probabilities), so the caller needs no special case.
//
// 2. cuBLAS batched GEMMs plus softmax kernels (AttentionImpl::Cublas, every
//    dtype): the fallback and the cross-check. The (b, h) batch has two
//    strides (T*3C per sample, HS per head), which one strided batch cannot
//    express, so the GEMMs take device arrays of per-(b, h) pointers, written
//    by one small kernel per call (no host round trip). Scores S = Q K^T / sqrt(HS)
//    are computed in fp32 into the scratch arena (so the softmax sees unrounded
//    scores), probabilities P are stored in aux in the compute dtype for the
//    backward pass, and O = P V is written straight into out (B, T, C).
//    Backward: dV = P^T dO, dP = dO V^T (fp32 scratch), dS = P * (dP -
//    rowsum(P * dP)) (compute dtype scratch), dQ = dS K / sqrt(HS),
//    dK = dS^T Q / sqrt(HS), every gradient written in place inside dqkv.
//    The GEMMs need every head to start on a 16-byte boundary (HS and C
//    times the element size multiples of 16); other head sizes (12 in bf16,
//    5 in fp32, ...) take the padded form: Q, K, V (and dO) are copied into
//    a layout whose heads are zero-padded to the next 16 bytes, the same
//    GEMMs run there (the zero columns add nothing to Q K^T or P V, and the
//    scale stays 1/sqrt of the true head size), and the results are copied
//    back without the padding. resolve_attention() (attention_aux.cpp)
//    decides, the model reports it once.
//
// Row-major/column-major: a row-major (T, HS) block with row stride ld is the
// column-major (HS, T) matrix with leading dimension ld; each GEMM below says
// which operand is transposed in those terms.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_short.h"
#include "kernels/attention_sm90a.h"
#include "kernels/column_sum.h"
#include "kernels/cuda_common.cuh"

namespace vit {

// ---------------------------------------------------------------------------
// cuDNN SDPA plan cache
// ---------------------------------------------------------------------------
struct SdpaKey {
  int64_t B, T, NH, HS;
  int32_t dtype, backward, deterministic, unused;  // no padding: keys compare with memcmp
  bool operator==(const SdpaKey& o) const { return std::memcmp(this, &o, sizeof(SdpaKey)) == 0; }
};
struct SdpaKeyHash {
  size_t operator()(const SdpaKey& k) const {
    const auto* p = reinterpret_cast<const unsigned char*>(&k);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(SdpaKey); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
};
// How the backward graph is expressed (see build_sdpa_backward).
enum class SdpaGraph { Forward, BackwardComposite, BackwardCompositeAccum, BackwardUnified };

struct SdpaPlan {
  std::vector<cudnnBackendDescriptor_t> owned;  // every descriptor made for this plan
  cudnnBackendDescriptor_t plan = nullptr;
  int64_t workspace_bytes = 0;  // the engine's workspace
  int64_t accum_bytes = 0;      // fp32 dQ accumulator (BackwardCompositeAccum), zeroed before each run
  SdpaGraph graph = SdpaGraph::Forward;
};
struct SdpaPlanCache {
  std::mutex mu;
  std::unordered_map<SdpaKey, SdpaPlan, SdpaKeyHash> plans;
};

void destroy_sdpa_plans(SdpaPlanCache* cache) {
  if (!cache) return;
  for (auto& kv : cache->plans) {
    for (auto it = kv.second.owned.rbegin(); it != kv.second.owned.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  }
  delete cache;
}

namespace kernels {
namespace {

using namespace cuda_detail;

// Tensor UIDs of the SDPA graphs.
enum : int64_t { kQ = 1, kK, kV, kO, kStats, kScale, kdO, kdQ, kdK, kdV, kOne, kdQAccum };

class DescriptorSet {
 public:
  explicit DescriptorSet(std::vector<cudnnBackendDescriptor_t>& owned) : owned_(owned) {}
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = nullptr;
    VIT_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d));
    owned_.push_back(d);
    return d;
  }
  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t dt, const int64_t dims[4], const int64_t strides[4],
                                  bool by_value = false) {
    cudnnBackendDescriptor_t d = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = by_value ? 4 : 16;
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    if (by_value) {
      const bool yes = true;
      VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes));
    }
    VIT_CUDNN_CHECK(cudnnBackendFinalize(d));
    return d;
  }

 private:
  std::vector<cudnnBackendDescriptor_t>& owned_;
};

void set_desc(cudnnBackendDescriptor_t op, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value) {
  VIT_CUDNN_CHECK(cudnnBackendSetAttribute(op, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value));
}

// Operation graph -> heuristics -> the first execution plan that finalizes.
// Returns false (with cuDNN's reasons appended) when no engine takes it.
bool plan_graph(GpuHandles& h, DescriptorSet& ds, const std::vector<cudnnBackendDescriptor_t>& ops, SdpaPlan& p,
                std::string& reasons) {
  cudnnBackendDescriptor_t graph = ds.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  VIT_CUDNN_CHECK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h.cudnn));
  VIT_CUDNN_CHECK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                           static_cast<int64_t>(ops.size()), ops.data()));
  cudnnStatus_t st = cudnnBackendFinalize(graph);
  if (st != CUDNN_STATUS_SUCCESS) {
    char msg[256] = {0};
    cudnnGetLastErrorString(msg, sizeof(msg));
    reasons += str_cat(" [graph: ", cudnnGetErrorString(st), " ", msg, "]");
    return false;
  }
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    cudnnBackendDescriptor_t heur = ds.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) continue;
    int64_t count = 0;
    VIT_CUDNN_CHECK(
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    if (count <= 0) continue;
    std::vector<cudnnBackendDescriptor_t> cfgs(static_cast<size_t>(count));
    for (auto& c : cfgs) c = ds.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t got = 0;
    VIT_CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                             count, &got, cfgs.data()));
    for (int64_t i = 0; i < got; ++i) {
      cudnnBackendDescriptor_t plan = ds.make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      VIT_CUDNN_CHECK(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h.cudnn));
      VIT_CUDNN_CHECK(cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]));
      st = cudnnBackendFinalize(plan);
      if (st != CUDNN_STATUS_SUCCESS) {
        char msg[256] = {0};
        cudnnGetLastErrorString(msg, sizeof(msg));
        reasons += str_cat(" [config ", i, ": ", cudnnGetErrorString(st), " ", msg, "]");
        continue;
      }
      int64_t n = 0;
      VIT_CUDNN_CHECK(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                               &n, &p.workspace_bytes));
      p.plan = plan;
      return true;
    }
  }
  reasons += " [no engine configuration]";
  return false;
}

// Small builders for the backend's generic operations.
class OpBuilder {
 public:
  OpBuilder(DescriptorSet& ds, std::vector<cudnnBackendDescriptor_t>& ops) : ds_(ds), ops_(ops) {}

  // An intermediate tensor that never reaches memory (fused inside the engine).
  cudnnBackendDescriptor_t virt(std::vector<int64_t> dims, std::vector<int64_t> strides,
                                cudnnDataType_t dt = CUDNN_DATA_FLOAT) {
    cudnnBackendDescriptor_t d = ds_.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t uid = next_uid_++, alignment = 16;
    const bool yes = true;
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data()));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data()));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes));
    VIT_CUDNN_CHECK(cudnnBackendFinalize(d));
    return d;
  }
  // y = x (op) b, or y = op(x) when b is null; math in fp32.
  void pointwise(cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                 cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t pw = ds_.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    VIT_CUDNN_CHECK(cudnnBackendFinalize(pw));
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    VIT_CUDNN_CHECK(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }
  void reduce_add(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd = ds_.make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnReduceTensorOp_t mode = CUDNN_REDUCE_TENSOR_ADD;
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    VIT_CUDNN_CHECK(
        cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    VIT_CUDNN_CHECK(cudnnBackendFinalize(rd));
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd);
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    VIT_CUDNN_CHECK(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }
  // c = a @ b over the last two dimensions, fp32 accumulation.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = ds_.make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    VIT_CUDNN_CHECK(cudnnBackendFinalize(mm));
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    VIT_CUDNN_CHECK(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }
  // y: the same data as x under other dims/strides (a transpose, in effect).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x);
    set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    VIT_CUDNN_CHECK(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }

 private:
  DescriptorSet& ds_;
  std::vector<cudnnBackendDescriptor_t>& ops_;
  int64_t next_uid_ = 1000;
};

// The backward pass as the graph of generic operations that cuDNN's fused
// flash-attention backward engine recognises (the form NVIDIA's own
// frontend emits; on Hopper the single SDPA_BWD operation has no engine):
//   softmax_sum = rowsum(dO * O)                      (b, h, sq, 1)
//   P   = exp(scale * Q K^T - stats)                  recomputed, never stored
//   dV  = P^T dO
//   dS  = P * (dO V^T - softmax_sum) * scale
//   dK  = dS^T Q,   dQ = dS K
// K and V enter transposed (KT, VT: the last two dims and strides swapped),
// as the engine expects. Without an fp32 dQ accumulator tensor the engine
// takes its deterministic path (a dP workspace, no atomics); with one
// (accum = true) dQ is summed in fp32 with atomics and then converted.
void build_sdpa_backward_composite(GpuHandles& h, const SdpaKey& key, bool accum, bool k_view_fp32, SdpaPlan& p,
                                   std::string& reasons) {
  DescriptorSet ds(p.owned);
  std::vector<cudnnBackendDescriptor_t> ops;
  OpBuilder g(ds, ops);
  const int64_t B = key.B, T = key.T, NH = key.NH, HS = key.HS, C = NH * HS;
  const cudnnDataType_t dt =
      static_cast<DType>(key.dtype) == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  const int64_t qdims[4] = {B, NH, T, HS}, qstr[4] = {T * 3 * C, HS, 3 * C, 1};
  const int64_t tdims[4] = {B, NH, HS, T}, tstr[4] = {T * 3 * C, HS, 1, 3 * C};  // KT, VT inside qkv
  const int64_t odims[4] = {B, NH, T, HS}, ostr[4] = {T * C, HS, C, 1};
  const int64_t sdims[4] = {B, NH, T, 1}, sstr[4] = {NH * T, T, 1, 1};
  const int64_t one[4] = {1, 1, 1, 1};
  cudnnBackendDescriptor_t Q = ds.tensor(kQ, dt, qdims, qstr);
  cudnnBackendDescriptor_t KT = ds.tensor(kK, dt, tdims, tstr);
  cudnnBackendDescriptor_t VT = ds.tensor(kV, dt, tdims, tstr);
  cudnnBackendDescriptor_t O = ds.tensor(kO, dt, odims, ostr);
  cudnnBackendDescriptor_t dO = ds.tensor(kdO, dt, odims, ostr);
  cudnnBackendDescriptor_t stats = ds.tensor(kStats, CUDNN_DATA_FLOAT, sdims, sstr);
  cudnnBackendDescriptor_t scale = ds.tensor(kScale, CUDNN_DATA_FLOAT, one, one, true);
  cudnnBackendDescriptor_t unit = ds.tensor(kOne, CUDNN_DATA_FLOAT, one, one, true);
  cudnnBackendDescriptor_t dQ = ds.tensor(kdQ, dt, qdims, qstr);
  cudnnBackendDescriptor_t dK = ds.tensor(kdK, dt, qdims, qstr);
  cudnnBackendDescriptor_t dV = ds.tensor(kdV, dt, qdims, qstr);

  const std::vector<int64_t> tt_dims{B, NH, T, T}, tt_str{NH * T * T, T * T, T, 1};
  const std::vector<int64_t> ttT_dims{B, NH, T, T}, ttT_str{NH * T * T, T * T, 1, T};  // transposed view

  // softmax_sum = rowsum(dO * O) * 1
  cudnnBackendDescriptor_t dOO = g.virt({B, NH, T, HS}, {NH * T * HS, T * HS, NH * HS, 1});
  g.pointwise(CUDNN_POINTWISE_MUL, dO, O, dOO);
  cudnnBackendDescriptor_t rowsum = g.virt({B, NH, T, 1}, {NH * T, T, 1, 1});
  g.reduce_add(dOO, rowsum);
  cudnnBackendDescriptor_t softmax_sum = g.virt({B, NH, T, 1}, {NH * T, T, 1, 1});
  g.pointwise(CUDNN_POINTWISE_MUL, rowsum, unit, softmax_sum);

  // P = exp(scale * Q KT - stats)
  cudnnBackendDescriptor_t S = g.virt(tt_dims, tt_str);
  g.matmul(Q, KT, S);
  cudnnBackendDescriptor_t S_scaled = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_MUL, S, scale, S_scaled);
  cudnnBackendDescriptor_t S_shift = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_SUB, S_scaled, stats, S_shift);
  cudnnBackendDescriptor_t P = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_EXP, S_shift, nullptr, P);

  // dV = P^T dO
  cudnnBackendDescriptor_t PT = g.virt(ttT_dims, ttT_str, dt);
  g.reshape(P, PT);
  g.matmul(PT, dO, dV);

  // dS = (dO VT * 1 - softmax_sum) * P * scale
  cudnnBackendDescriptor_t dP = g.virt(tt_dims, tt_str);
  g.matmul(dO, VT, dP);
  cudnnBackendDescriptor_t dP1 = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_MUL, dP, unit, dP1);
  cudnnBackendDescriptor_t dP2 = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_SUB, dP1, softmax_sum, dP2);
  cudnnBackendDescriptor_t dS0 = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_MUL, dP2, P, dS0);
  cudnnBackendDescriptor_t dS = g.virt(tt_dims, tt_str);
  g.pointwise(CUDNN_POINTWISE_MUL, dS0, scale, dS);

  // dK = dS^T Q
  cudnnBackendDescriptor_t dST = g.virt(ttT_dims, ttT_str, dt);
  g.reshape(dS, dST);
  g.matmul(dST, Q, dK);

  // dQ = dS K   (K: KT viewed back in its own layout)
  cudnnBackendDescriptor_t K =
      g.virt({B, NH, T, HS}, {T * 3 * C, HS, 3 * C, 1}, k_view_fp32 ? CUDNN_DATA_FLOAT : dt);
  g.reshape(KT, K);
  if (!accum) {
    g.matmul(dS, K, dQ);
  } else {
    cudnnBackendDescriptor_t acc = ds.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t uid = kdQAccum, alignment = 16;
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    const cudnnBackendTensorReordering_t reorder = CUDNN_TENSOR_REORDERING_F16x16;
    const int64_t adims[4] = {B, NH, T, HS}, astr[4] = {NH * T * HS, T * HS, HS, 1};
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(acc, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(acc, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(acc, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(acc, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, adims));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(acc, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, astr));
    VIT_CUDNN_CHECK(cudnnBackendSetAttribute(acc, CUDNN_ATTR_TENSOR_REORDERING_MODE,
                                             CUDNN_TYPE_TENSOR_REORDERING_MODE, 1, &reorder));
    VIT_CUDNN_CHECK(cudnnBackendFinalize(acc));
    g.matmul(dS, K, acc);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, acc, nullptr, dQ);
    p.accum_bytes = B * NH * T * HS * static_cast<int64_t>(sizeof(float));
  }
  if (plan_graph(h, ds, ops, p, reasons)) {
    p.graph = accum ? SdpaGraph::BackwardCompositeAccum : SdpaGraph::BackwardComposite;
  }
}

// Forward: cuDNN's single SDPA operation (flash attention) with statistics.
// Backward on request of `unified`: the single SDPA_BWD operation (engines
// for it exist on newer GPUs only; tried last).
void build_sdpa_unified(GpuHandles& h, const SdpaKey& key, SdpaPlan& p, std::string& reasons) {
  DescriptorSet ds(p.owned);
  const int64_t B = key.B, T = key.T, NH = key.NH, HS = key.HS, C = NH * HS;
  const cudnnDataType_t dt =
      static_cast<DType>(key.dtype) == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  const int64_t dims[4] = {B, NH, T, HS};
  const int64_t qkv_strides[4] = {T * 3 * C, HS, 3 * C, 1};  // inside qkv / dqkv (B, T, 3C)
  const int64_t out_strides[4] = {T * C, HS, C, 1};          // inside out / dout (B, T, C)
  const int64_t stats_dims[4] = {B, NH, T, 1};
  const int64_t stats_strides[4] = {NH * T, T, 1, 1};
  const int64_t one[4] = {1, 1, 1, 1};

  cudnnBackendDescriptor_t q = ds.tensor(kQ, dt, dims, qkv_strides);
  cudnnBackendDescriptor_t k = ds.tensor(kK, dt, dims, qkv_strides);
  cudnnBackendDescriptor_t v = ds.tensor(kV, dt, dims, qkv_strides);
  cudnnBackendDescriptor_t o = ds.tensor(kO, dt, dims, out_strides);
  cudnnBackendDescriptor_t stats = ds.tensor(kStats, CUDNN_DATA_FLOAT, stats_dims, stats_strides);
  cudnnBackendDescriptor_t scale = ds.tensor(kScale, CUDNN_DATA_FLOAT, one, one, /*by_value=*/true);

  cudnnBackendDescriptor_t op;
  if (!key.backward) {
    op = ds.make(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, q);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, k);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, v);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, o);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, stats);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, scale);
  } else {
    cudnnBackendDescriptor_t dO = ds.tensor(kdO, dt, dims, out_strides);
    cudnnBackendDescriptor_t dQ = ds.tensor(kdQ, dt, dims, qkv_strides);
    cudnnBackendDescriptor_t dK = ds.tensor(kdK, dt, dims, qkv_strides);
    cudnnBackendDescriptor_t dV = ds.tensor(kdV, dt, dims, qkv_strides);
    op = ds.make(CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, q);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, k);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, v);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, o);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, dO);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, stats);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, scale);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, dQ);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, dK);
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, dV);
  }
  VIT_CUDNN_CHECK(cudnnBackendFinalize(op));
  if (plan_graph(h, ds, {op}, p, reasons)) p.graph = key.backward ? SdpaGraph::BackwardUnified : SdpaGraph::Forward;
}

void release(SdpaPlan& p) {
  for (auto it = p.owned.rbegin(); it != p.owned.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  p = SdpaPlan();
}

SdpaPlan build_sdpa_plan(GpuHandles& h, const SdpaKey& key) {
  SdpaPlan p;
  std::string reasons;
  if (!key.backward) {
    build_sdpa_unified(h, key, p, reasons);
  } else {
    // Deterministic composite first, then the atomic-accumulator form, then
    // the single operation. The transposed view of K is declared in the
    // input's type first, then as fp32 (the type of the graph's intermediates).
    const char* names[5] = {"composite", "composite/fp32 K view", "composite+accum", "composite+accum/fp32 K view",
                            "unified"};
    // Non-deterministic: the accumulator forms first.
    const int order_det[5] = {0, 1, 2, 3, 4}, order_fast[5] = {2, 3, 0, 1, 4};
    for (int i = 0; i < 5 && !p.plan; ++i) {
      const int attempt = key.deterministic ? order_det[i] : order_fast[i];
      std::string why;
      try {
        if (attempt < 4) {
          build_sdpa_backward_composite(h, key, attempt >= 2, attempt % 2 == 1, p, why);
        } else {
          build_sdpa_unified(h, key, p, why);
        }
      } catch (const Error& e) {
        why += str_cat(" [", e.what(), "]");
      }
      if (!p.plan) {
        reasons += str_cat(" {", names[attempt], ":", why, "}");
        release(p);
      }
    }
  }
  if (!p.plan) {
    release(p);
    VIT_THROW("cuDNN has no SDPA ", key.backward ? "backward" : "forward", " engine for B=", key.B, " T=", key.T,
              " NH=", key.NH, " HS=", key.HS, " (", dtype_name(static_cast<DType>(key.dtype)), "):", reasons,
              "; choose the cuBLAS attention path for this shape");
  }
  if (std::getenv("VIT_KERNELS_VERBOSE")) {
    static const char* names[] = {"forward (SDPA operation)", "backward composite (deterministic)",
                                  "backward composite (fp32 dQ accumulator)", "backward (SDPA operation)"};
    std::fprintf(stderr, "vit: cuDNN SDPA plan B=%lld T=%lld NH=%lld HS=%lld %s: %s, workspace %.1f MiB%s%s\n",
                 (long long)key.B, (long long)key.T, (long long)key.NH, (long long)key.HS,
                 dtype_name(static_cast<DType>(key.dtype)), names[static_cast<int>(p.graph)],
                 (p.workspace_bytes + p.accum_bytes) / 1048576.0, reasons.empty() ? "" : "; tried before:",
                 reasons.c_str());
  }
  return p;
}

const SdpaPlan& sdpa_plan(GpuHandles& h, const SdpaKey& key) {
  if (!h.sdpa_plans) h.sdpa_plans = new SdpaPlanCache();
  std::lock_guard<std::mutex> lock(h.sdpa_plans->mu);
  auto it = h.sdpa_plans->plans.find(key);
  if (it == h.sdpa_plans->plans.end()) it = h.sdpa_plans->plans.emplace(key, build_sdpa_plan(h, key)).first;
  return it->second;
}

// Runs a plan; the workspace arena holds the engine's workspace, then (for the
// accumulator form) the fp32 dQ accumulator, which must start at zero.
void sdpa_execute(GpuHandles& h, const SdpaPlan& plan, std::vector<int64_t> uids, std::vector<void*> ptrs) {
  const size_t ws_bytes = (static_cast<size_t>(plan.workspace_bytes) + 255) & ~size_t(255);
  const size_t total = ws_bytes + static_cast<size_t>(plan.accum_bytes);
  char* ws = total > 0 ? static_cast<char*>(h.cudnn_workspace.get(total, h.stream)) : nullptr;
  if (plan.accum_bytes > 0) {
    VIT_CUDA_CHECK(cudaMemsetAsync(ws + ws_bytes, 0, static_cast<size_t>(plan.accum_bytes), h.stream));
    uids.push_back(kdQAccum);
    ptrs.push_back(ws + ws_bytes);
  }
  void* ws_ptr = ws;
  cudnnBackendDescriptor_t pack = nullptr;
  VIT_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
  struct Guard {
    cudnnBackendDescriptor_t d;
    ~Guard() { cudnnBackendDestroyDescriptor(d); }
  } guard{pack};
  const auto n = static_cast<int64_t>(uids.size());
  VIT_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids.data()));
  VIT_CUDNN_CHECK(
      cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs.data()));
  VIT_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws_ptr));
  VIT_CUDNN_CHECK(cudnnBackendFinalize(pack));
  VIT_CUDNN_CHECK(cudnnBackendExecute(h.cudnn, plan.plan, pack));
}

// ---------------------------------------------------------------------------
// cuBLAS path: pointer arrays and softmax kernels
// ---------------------------------------------------------------------------
constexpr int kMaxArrays = 10;

// Array j, entry i = b * NH + h:  base[j] + (b * stride_b[j] + h * stride_h[j]) * elem[j]  bytes.
struct PointerSpec {
  int count;
  char* base[kMaxArrays];
  int64_t stride_b[kMaxArrays], stride_h[kMaxArrays];
  int elem[kMaxArrays];

  // Array j: element (b, h) at base + (b * sb + h * sh) * elem_bytes.
  void set(int j, char* b, int64_t sb, int64_t sh, int elem_bytes) {
    base[j] = b;
    stride_b[j] = sb;
    stride_h[j] = sh;
    elem[j] = elem_bytes;
  }
};

__global__ void build_pointers_kernel(void** out, PointerSpec spec, int64_t BH, int NH) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= BH) return;
  const int64_t b = i / NH, hh = i % NH;
  for (int j = 0; j < spec.count; ++j) {
    out[j * BH + i] = spec.base[j] + (b * spec.stride_b[j] + hh * spec.stride_h[j]) * spec.elem[j];
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// P (rows, T) = softmax of each row of S (rows, T) fp32. One warp per row.
template <typename T>
__global__ void softmax_rows_kernel(T* __restrict__ P, const float* __restrict__ S, int64_t rows, int Tn) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* s = S + row * Tn;
  float mx = -INFINITY;
  for (int j = lane; j < Tn; j += 32) mx = fmaxf(mx, s[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j < Tn; j += 32) sum += __expf(s[j] - mx);
  const float inv = 1.0f / warp_sum(sum);
  T* p = P + row * Tn;
  for (int j = lane; j < Tn; j += 32) p[j] = from_f<T>(__expf(s[j] - mx) * inv);
}

// dS (rows, T) = P * (dP - sum_j P_j dP_j), gradient wrt the scaled scores.
template <typename T>
__global__ void softmax_backward_rows_kernel(T* __restrict__ dS, const T* __restrict__ P,
                                             const float* __restrict__ dP, int64_t rows, int Tn) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* p = P + row * Tn;
  const float* dp = dP + row * Tn;
  float dot = 0.0f;
  for (int j = lane; j < Tn; j += 32) dot += to_f(p[j]) * dp[j];
  dot = warp_sum(dot);
  T* ds = dS + row * Tn;
  for (int j = lane; j < Tn; j += 32) ds[j] = from_f<T>(to_f(p[j]) * (dp[j] - dot));
}

size_t round_up(size_t x) { return (x + 255) & ~size_t(255); }

cublasComputeType_t blas_compute(const GpuHandles& h, DType dt) {
  return (dt == DType::F32 && h.tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

void batched_gemm(GpuHandles& h, bool ta, bool tb, int m, int n, int k, float alpha, void** A, DType at, int lda,
                  void** Bm, DType bt, int ldb, void** Cm, DType ct, int ldc, int batch, DType compute_dt) {
  const float beta = 0.0f;
  blas_workspace(h, h.stream);
  VIT_CUBLAS_CHECK(cublasGemmBatchedEx(h.blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                                       k, &alpha, const_cast<const void**>(A), cuda_type(at), lda,
                                       const_cast<const void**>(Bm), cuda_type(bt), ldb, &beta, Cm, cuda_type(ct),
                                       ldc, batch, blas_compute(h, compute_dt), CUBLAS_GEMM_DEFAULT));
}

struct Shape {
  int64_t B, T, C, NH, HS;
};

Shape check_shapes(const Tensor& qkv, int NH, const char* op) {
  check_gpu(qkv, op, "qkv");
  VIT_CHECK(qkv.ndim == 3 && qkv.dim(2) % 3 == 0, op, ": qkv must be (B, T, 3C), got ", qkv.shape_str());
  Shape s;
  s.B = qkv.dim(0);
  s.T = qkv.dim(1);
  s.C = qkv.dim(2) / 3;
  s.NH = NH;
  VIT_CHECK(NH > 0 && s.C % NH == 0, op, ": C = ", s.C, " is not divisible by NH = ", NH);
  s.HS = s.C / NH;
  return s;
}

void check_cublas_alignment(const Shape& s, DType dt, std::initializer_list<const void*> bases, const char* op) {
  const size_t e = dtype_size(dt);
  bool ok = (s.HS * e) % 16 == 0 && (s.C * e) % 16 == 0;
  for (const void* p : bases) ok = ok && aligned16(p);
  VIT_CHECK(ok, op, ": the cuBLAS attention path needs 16-byte aligned heads (HS * ", e, " bytes = ", s.HS * e,
            ", C * ", e, " = ", s.C * e, ") and tensors");
}

// The path that runs (attention.h: resolve_attention), also when a caller
// asked for the in-place cuBLAS path on tensors that are not 16-byte aligned.
AttentionImpl path_for(AttentionImpl impl, const Shape& s, DType dt, std::initializer_list<const void*> bases) {
  AttentionImpl path = resolve_attention(Device::CUDA, impl, dt, s.C, s.NH);
  if (path == AttentionImpl::Cublas) {
    for (const void* p : bases) {
      if (!aligned16(p)) path = AttentionImpl::CublasPadded;
    }
  }
  return path;
}

// dst: groups of dst_hs values; src: groups of src_hs values (`groups` of
// each). The first copy_hs values of each group are copied, the rest of a
// dst group is zero. Packs heads into a padded layout and unpacks them.
template <typename T>
__global__ void copy_heads_kernel(T* __restrict__ dst, int64_t dst_hs, const T* __restrict__ src, int64_t src_hs,
                                  int64_t groups, int64_t copy_hs) {
  const int64_t n = groups * dst_hs;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t g = i / dst_hs, d = i - g * dst_hs;
    dst[i] = d < copy_hs ? src[g * src_hs + d] : from_f<T>(0.0f);
  }
}

void copy_heads(GpuHandles& h, DType dt, void* dst, int64_t dst_hs, const void* src, int64_t src_hs, int64_t groups,
                int64_t copy_hs) {
  VIT_DTYPE_SWITCH(dt, T,
                   copy_heads_kernel<T><<<grid_for(groups * dst_hs, 256, h.num_sms), 256, 0, h.stream>>>(
                       static_cast<T*>(dst), dst_hs, static_cast<const T*>(src), src_hs, groups, copy_hs));
  VIT_CUDA_CHECK_LAUNCH();
}

// The padded layout: every head widened to HSp, a whole number of 16-byte
// rows; zeros in the extra columns leave Q K^T and P V unchanged.
Shape padded_shape(const Shape& s, DType dt) {
  const int64_t per16 = 16 / static_cast<int64_t>(dtype_size(dt));
  Shape p = s;
  p.HS = (s.HS + per16 - 1) / per16 * per16;
  p.C = p.HS * s.NH;
  return p;
}

// cuBLAS forward on (B, T, 3C) qkv with heads in place; scores scaled by
// `scale` (1/sqrt of the true head size, also for padded heads).
// scratch: pointer arrays | S (BH, T, T) fp32.
void cublas_forward(GpuHandles& h, const Shape& s, DType dt, char* q, char* out, char* aux, float scale,
                    const char* op) {
  check_cublas_alignment(s, dt, {q, out, aux}, op);
  const size_t e = dtype_size(dt);
  const int64_t BH = s.B * s.NH;
  const size_t ptr_bytes = round_up(sizeof(void*) * 6 * BH);
  const size_t s_bytes = round_up(sizeof(float) * BH * s.T * s.T);
  char* scratch = static_cast<char*>(h.scratch.get(ptr_bytes + s_bytes, h.stream));
  void** ptrs = reinterpret_cast<void**>(scratch);
  float* S = reinterpret_cast<float*>(scratch + ptr_bytes);
  const int64_t sb_qkv = s.T * 3 * s.C, sb_out = s.T * s.C, sb_tt = s.NH * s.T * s.T;
  PointerSpec spec{};
  spec.count = 6;
  spec.set(0, q, sb_qkv, s.HS, (int)e);                                 // Q
  spec.set(1, q + s.C * e, sb_qkv, s.HS, (int)e);                       // K
  spec.set(2, q + 2 * s.C * e, sb_qkv, s.HS, (int)e);                   // V
  spec.set(3, out, sb_out, s.HS, (int)e);                               // O
  spec.set(4, aux, sb_tt, s.T * s.T, (int)e);                           // P
  spec.set(5, reinterpret_cast<char*>(S), sb_tt, s.T * s.T, 4);         // S
  build_pointers_kernel<<<static_cast<unsigned>((BH + 127) / 128), 128, 0, h.stream>>>(ptrs, spec, BH, s.NH);
  VIT_CUDA_CHECK_LAUNCH();
  void** sptrs = ptrs + 5 * BH;
  void** Qp = ptrs;
  void** Kp = ptrs + BH;
  void** Vp = ptrs + 2 * BH;
  void** Op = ptrs + 3 * BH;
  void** Pp = ptrs + 4 * BH;
  const int Ti = static_cast<int>(s.T), HSi = static_cast<int>(s.HS), C3 = static_cast<int>(3 * s.C),
            Ci = static_cast<int>(s.C), BHi = static_cast<int>(BH);
  // S^T (col-major T x T) = K (op T of the (HS, T) view) . Q (HS, T): row-major S = Q K^T.
  batched_gemm(h, true, false, Ti, Ti, HSi, scale, Kp, dt, C3, Qp, dt, C3, sptrs, DType::F32, Ti, BHi, dt);
  const int64_t rows = BH * s.T;
  VIT_DTYPE_SWITCH(dt, T, softmax_rows_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, h.stream>>>(
                              reinterpret_cast<T*>(aux), S, rows, Ti));
  VIT_CUDA_CHECK_LAUNCH();
  // O^T (HS, T) = V (HS, T) . P^T (P row-major is P^T col-major): row-major O = P V.
  batched_gemm(h, false, false, HSi, Ti, Ti, 1.0f, Vp, dt, C3, Pp, dt, Ti, Op, dt, Ci, BHi, dt);
}

// cuBLAS backward, heads in place.
// scratch: pointer arrays | dP (BH, T, T) fp32 | dS (BH, T, T) compute dtype.
void cublas_backward(GpuHandles& h, const Shape& s, DType dt, char* dq, const char* dout, char* q, const char* aux,
                     float scale, const char* op) {
  check_cublas_alignment(s, dt, {q, dq, dout, aux}, op);
  const size_t e = dtype_size(dt);
  const int64_t BH = s.B * s.NH;
  const size_t ptr_bytes = round_up(sizeof(void*) * 10 * BH);
  const size_t dp_bytes = round_up(sizeof(float) * BH * s.T * s.T);
  const size_t ds_bytes = round_up(e * BH * s.T * s.T);
  char* scratch = static_cast<char*>(h.scratch.get(ptr_bytes + dp_bytes + ds_bytes, h.stream));
  void** ptrs = reinterpret_cast<void**>(scratch);
  float* dP = reinterpret_cast<float*>(scratch + ptr_bytes);
  char* dS = scratch + ptr_bytes + dp_bytes;
  const int64_t sb_qkv = s.T * 3 * s.C, sb_out = s.T * s.C, sb_tt = s.NH * s.T * s.T;
  PointerSpec spec{};
  spec.count = 10;
  spec.set(0, q, sb_qkv, s.HS, (int)e);                                    // Q
  spec.set(1, q + s.C * e, sb_qkv, s.HS, (int)e);                          // K
  spec.set(2, q + 2 * s.C * e, sb_qkv, s.HS, (int)e);                      // V
  spec.set(3, const_cast<char*>(dout), sb_out, s.HS, (int)e);              // dO
  spec.set(4, const_cast<char*>(aux), sb_tt, s.T * s.T, (int)e);           // P
  spec.set(5, reinterpret_cast<char*>(dP), sb_tt, s.T * s.T, 4);           // dP
  spec.set(6, dS, sb_tt, s.T * s.T, (int)e);                               // dS
  spec.set(7, dq, sb_qkv, s.HS, (int)e);                                   // dQ
  spec.set(8, dq + s.C * e, sb_qkv, s.HS, (int)e);                         // dK
  spec.set(9, dq + 2 * s.C * e, sb_qkv, s.HS, (int)e);                     // dV
  build_pointers_kernel<<<static_cast<unsigned>((BH + 127) / 128), 128, 0, h.stream>>>(ptrs, spec, BH, s.NH);
  VIT_CUDA_CHECK_LAUNCH();
  void** P_[10];
  for (int j = 0; j < 10; ++j) P_[j] = ptrs + j * BH;
  void **Qp = P_[0], **Kp = P_[1], **Vp = P_[2], **dOp = P_[3], **Pp = P_[4], **dPp = P_[5], **dSp = P_[6],
       **dQp = P_[7], **dKp = P_[8], **dVp = P_[9];
  const int Ti = static_cast<int>(s.T), HSi = static_cast<int>(s.HS), C3 = static_cast<int>(3 * s.C),
            Ci = static_cast<int>(s.C), BHi = static_cast<int>(BH);
  // dV (HS, T col-major) = dO (HS, T) . op_T(P^T col-major) = (P^T dO)^T.
  batched_gemm(h, false, true, HSi, Ti, Ti, 1.0f, dOp, dt, Ci, Pp, dt, Ti, dVp, dt, C3, BHi, dt);
  // dP^T (T, T col-major) = op_T(V (HS, T)) . dO (HS, T): row-major dP = dO V^T.
  batched_gemm(h, true, false, Ti, Ti, HSi, 1.0f, Vp, dt, C3, dOp, dt, Ci, dPp, DType::F32, Ti, BHi, dt);
  const int64_t rows = BH * s.T;
  VIT_DTYPE_SWITCH(dt, T,
                   softmax_backward_rows_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, h.stream>>>(
                       reinterpret_cast<T*>(dS), reinterpret_cast<const T*>(aux), dP, rows, Ti));
  VIT_CUDA_CHECK_LAUNCH();
  // dQ = scale * dS K:  dQ^T (HS, T) = K (HS, T) . dS^T (dS row-major).
  batched_gemm(h, false, false, HSi, Ti, Ti, scale, Kp, dt, C3, dSp, dt, Ti, dQp, dt, C3, BHi, dt);
  // dK = scale * dS^T Q:  dK^T (HS, T) = Q (HS, T) . op_T(dS^T col-major) = (dS^T Q)^T.
  batched_gemm(h, false, true, HSi, Ti, Ti, scale, Qp, dt, C3, dSp, dt, Ti, dKp, dt, C3, BHi, dt);
}

}  // namespace

namespace cuda {

void attention_forward(const Context& ctx, Tensor out, Tensor aux, const Tensor& qkv, int NH, AttentionImpl impl) {
  const char* op = "attention_forward";
  GpuHandles& h = gpu_of(ctx, op);
  VIT_CHECK(stream_of(ctx) == h.stream, op, ": the Context's stream must be its GpuHandles' stream");
  const Shape s = check_shapes(qkv, NH, op);
  const DType dt = qkv.dtype;
  check_gpu(out, op, "out");
  check_gpu(aux, op, "aux");
  check_dtype(out, dt, op, "out");
  check_numel(out, s.B * s.T * s.C, op, "out");
  const AttentionImpl path = path_for(impl, s, dt, {qkv.data, out.data, aux.data});
  const size_t aux_need = attention_aux_bytes(Device::CUDA, path, dt, s.B, s.T, s.NH);
  VIT_CHECK(aux.bytes() >= aux_need, op, ": aux has ", aux.bytes(), " bytes, needs ", aux_need, " for the ",
            attention_impl_name(path), " path (size it with the path resolve_attention returns)");
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.HS));
  const size_t e = dtype_size(dt);
  char* q = static_cast<char*>(qkv.data);

  if (path == AttentionImpl::CuDNN) {
    const bool aligned = (reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(out.data) |
                          reinterpret_cast<uintptr_t>(aux.data)) % 16 == 0;  // the tensor copies' need
    if (h.attention_forward_wgmma && aligned && sm90a_attention_forward_fits(h, dt, s.T, s.HS)) {
      sm90a_attention_forward(h, dt, s.B, s.T, s.NH, out.data, q, static_cast<float*>(aux.data), scale);
      return;
    }
    const SdpaKey key{s.B, s.T, s.NH, s.HS, static_cast<int32_t>(dt), 0, 1, 0};
    const SdpaPlan& plan = sdpa_plan(h, key);
    float scale_value = scale;
    sdpa_execute(h, plan, {kQ, kK, kV, kO, kStats, kScale},
                 {q, q + s.C * e, q + 2 * s.C * e, out.data, aux.data, &scale_value});
    return;
  }
  if (path == AttentionImpl::Cublas) {
    cublas_forward(h, s, dt, q, static_cast<char*>(out.data), static_cast<char*>(aux.data), scale, op);
    return;
  }
  // Padded heads: qkv_p (B, T, 3 Cp) | out_p (B, T, Cp) in their own arena
  // (the cuBLAS form uses `scratch`).
  const Shape p = padded_shape(s, dt);
  const size_t qkv_bytes = round_up(static_cast<size_t>(s.B * s.T * 3 * p.C) * e);
  const size_t out_bytes = round_up(static_cast<size_t>(s.B * s.T * p.C) * e);
  char* pad = static_cast<char*>(h.attention_pad.get(qkv_bytes + out_bytes, h.stream));
  char* qkv_p = pad;
  char* out_p = pad + qkv_bytes;
  copy_heads(h, dt, qkv_p, p.HS, q, s.HS, s.B * s.T * 3 * s.NH, s.HS);
  cublas_forward(h, p, dt, qkv_p, out_p, static_cast<char*>(aux.data), scale, op);
  copy_heads(h, dt, out.data, s.HS, out_p, p.HS, s.B * s.T * s.NH, s.HS);
}

namespace {

// Whether the backward on `path` runs the short-sequence kernel: the one
// test behind both the dispatch and attention_backward_in_place (dqkv over
// qkv is safe exactly there).
bool short_backward_runs(const GpuHandles& h, AttentionImpl path, DType dt, int64_t T, int64_t HS) {
  return path == AttentionImpl::CuDNN && h.attention_backward_short && short_attention_backward_fits(h, dt, T, HS);
}

// The backward on one of the paths. Returns true when the bias gradient
// (bias_partial non-null) was summed by the kernel: bias_partial then holds
// one partial row of 3C per sample for fold_into.
bool attention_backward_paths(const Context& ctx, Tensor dqkv, const Tensor& dout, const Tensor& qkv,
                              const Tensor& out, const Tensor& aux, int NH, AttentionImpl impl, float* bias_partial) {
  const char* op = "attention_backward";
  GpuHandles& h = gpu_of(ctx, op);
  VIT_CHECK(stream_of(ctx) == h.stream, op, ": the Context's stream must be its GpuHandles' stream");
  const Shape s = check_shapes(qkv, NH, op);
  const DType dt = qkv.dtype;
  check_gpu(dqkv, op, "dqkv");
  check_gpu(dout, op, "dout");
  check_gpu(aux, op, "aux");
  check_dtype(dqkv, dt, op, "dqkv");
  check_dtype(dout, dt, op, "dout");
  check_numel(dqkv, s.B * s.T * 3 * s.C, op, "dqkv");
  check_numel(dout, s.B * s.T * s.C, op, "dout");
  const AttentionImpl path = path_for(impl, s, dt, {qkv.data, dqkv.data, dout.data, aux.data});
  const size_t aux_need = attention_aux_bytes(Device::CUDA, path, dt, s.B, s.T, s.NH);
  VIT_CHECK(aux.bytes() >= aux_need, op, ": aux has ", aux.bytes(), " bytes, needs ", aux_need, " for the ",
            attention_impl_name(path), " path (size it with the path resolve_attention returns)");
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.HS));
  const size_t e = dtype_size(dt);
  char* q = static_cast<char*>(qkv.data);
  char* dq = static_cast<char*>(dqkv.data);

  const bool short_kernel = short_backward_runs(h, path, dt, s.T, s.HS);
  VIT_CHECK(dqkv.data != qkv.data || short_kernel, op, ": dqkv over qkv is allowed only where the short-sequence "
            "kernel runs (attention_backward_in_place), not on the ", attention_impl_name(path), " path");
  if (path == AttentionImpl::CuDNN) {
    check_gpu(out, op, "out");
    check_dtype(out, dt, op, "out");
    check_numel(out, s.B * s.T * s.C, op, "out");
    if (short_kernel) {
      short_attention_backward(h, dt, s.B, s.T, s.NH, s.HS, dq, q, out.data, dout.data,
                               static_cast<const float*>(aux.data), scale, bias_partial);
      return bias_partial != nullptr;
    }
    const SdpaKey key{s.B, s.T, s.NH, s.HS, static_cast<int32_t>(dt), 1, h.sdpa_deterministic ? 1 : 0, 0};
    const SdpaPlan& plan = sdpa_plan(h, key);
    float scale_value = scale, one_value = 1.0f;
    std::vector<int64_t> uids{kQ, kK, kV, kO, kdO, kStats, kScale, kdQ, kdK, kdV};
    std::vector<void*> ptrs{q, q + s.C * e, q + 2 * s.C * e, out.data, dout.data, aux.data, &scale_value,
                            dq, dq + s.C * e, dq + 2 * s.C * e};
    if (plan.graph != SdpaGraph::BackwardUnified) {
      uids.push_back(kOne);
      ptrs.push_back(&one_value);
    }
    sdpa_execute(h, plan, std::move(uids), std::move(ptrs));
    return false;
  }
  if (path == AttentionImpl::Cublas) {
    cublas_backward(h, s, dt, dq, static_cast<const char*>(dout.data), q, static_cast<const char*>(aux.data), scale,
                    op);
    return false;
  }
  // Padded heads: qkv_p (B, T, 3 Cp) | dqkv_p (B, T, 3 Cp) | dout_p (B, T, Cp).
  const Shape p = padded_shape(s, dt);
  const size_t qkv_bytes = round_up(static_cast<size_t>(s.B * s.T * 3 * p.C) * e);
  const size_t out_bytes = round_up(static_cast<size_t>(s.B * s.T * p.C) * e);
  char* pad = static_cast<char*>(h.attention_pad.get(2 * qkv_bytes + out_bytes, h.stream));
  char* qkv_p = pad;
  char* dqkv_p = pad + qkv_bytes;
  char* dout_p = pad + 2 * qkv_bytes;
  copy_heads(h, dt, qkv_p, p.HS, q, s.HS, s.B * s.T * 3 * s.NH, s.HS);
  copy_heads(h, dt, dout_p, p.HS, dout.data, s.HS, s.B * s.T * s.NH, s.HS);
  cublas_backward(h, p, dt, dqkv_p, dout_p, qkv_p, static_cast<const char*>(aux.data), scale, op);
  copy_heads(h, dt, dq, s.HS, dqkv_p, p.HS, s.B * s.T * 3 * s.NH, s.HS);
  return false;
}

}  // namespace

void attention_backward(const Context& ctx, Tensor dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& aux, int NH, AttentionImpl impl, Tensor dbias, bool accumulate) {
  const char* op = "attention_backward";
  if (!dbias.defined()) {
    attention_backward_paths(ctx, dqkv, dout, qkv, out, aux, NH, impl, nullptr);
    return;
  }
  GpuHandles& h = gpu_of(ctx, op);
  const Shape s = check_shapes(qkv, NH, op);
  check_gpu(dbias, op, "dbias");
  check_dtype(dbias, DType::F32, op, "dbias");
  check_numel(dbias, 3 * s.C, op, "dbias");
  float* partial = fold_partials(h, h.stream, static_cast<size_t>(s.B) * 3 * s.C);
  if (attention_backward_paths(ctx, dqkv, dout, qkv, out, aux, NH, impl, partial)) {
    fold_into(h, h.stream, dbias.f32(), nullptr, 3 * s.C, partial, static_cast<int>(s.B), 3 * s.C, 32, accumulate);
  } else {
    column_sum(h, h.stream, dbias.f32(), dqkv.data, dqkv.dtype, s.B * s.T, 3 * s.C, accumulate);
  }
}

}  // namespace cuda

bool attention_backward_in_place(const Context& ctx, AttentionImpl impl, DType dt, int64_t T, int64_t C,
                                 int64_t NH) {
  if (!ctx.on_gpu() || NH < 1 || C % NH != 0) return false;
  return cuda::short_backward_runs(gpu_of(ctx, "attention_backward_in_place"),
                                   resolve_attention(Device::CUDA, impl, dt, C, NH), dt, T, C / NH);
}

bool cudnn_attention_available(const Context& ctx, DType dt, int64_t B, int64_t T, int64_t C, int64_t NH,
                               std::string* why) {
  if (why) why->clear();
  if (!ctx.on_gpu()) {
    if (why) *why = "not on a GPU";
    return false;
  }
  if (resolve_attention(Device::CUDA, AttentionImpl::CuDNN, dt, C, NH, why) != AttentionImpl::CuDNN) return false;
  GpuHandles& h = gpu_of(ctx, "cudnn_attention_available");
  const int64_t HS = C / NH;
  try {
    sdpa_plan(h, SdpaKey{B, T, NH, HS, static_cast<int32_t>(dt), 0, 1, 0});
    sdpa_plan(h, SdpaKey{B, T, NH, HS, static_cast<int32_t>(dt), 1, h.sdpa_deterministic ? 1 : 0, 0});
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
  return true;
}

}  // namespace kernels
}  // namespace vit
