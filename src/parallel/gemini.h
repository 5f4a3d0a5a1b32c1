// gemini: ZeRO stage 3 over fixed-size parameter chunks, with prefetch and
// CPU offload (Colossal-AI's GeminiPlugin, DESIGN.md section 1).
//
// Chunks. The model's segments (embeddings, block l, head) are grouped into
// chunks of at most plugin.gemini chunk bytes of compute-dtype parameters,
// never splitting a segment, so a chunk is one or more whole blocks and can
// be gathered while the previous one computes (Colossal-AI's chunk search
// packs ViT-B/16 into about two chunks, which leaves nothing to overlap).
// Each chunk is padded and split into dp equal aligned parts (BucketLayout,
// one bucket per chunk, numbered in backward order: chunk 0 holds the head).
// Rank r keeps part r of every chunk and nothing else of the parameters: its
// compute-dtype copy (read by gathers) and the fp32 master weights, AdamW
// moments and reduced gradient the optimizer updates.
//
//   forward   before a segment: its chunk is all-gathered into a slot of the
//             ChunkPool (or found there); after it: released (slot reusable),
//             and after the chunk's last segment is queued the next chunk's
//             gather prefetched on the communication stream
//   backward  the same in backward order; the chunk's fp32 gradients go to one
//             of two pooled gradient slots; when its last segment is done the
//             slot is reduce-scattered and this rank's part added into its
//             gradient shard (device), or downloaded to pinned host memory
//             (offloaded chunks) on a third stream while backward goes on
//             (an offloaded chunk's share of the global norm and non-finite
//             flag is taken on the device first, on the communication stream:
//             the step needs no host pass over the downloaded parts; with
//             several micro-batches the parts are summed on the host, and so
//             is their share, one sweep per chunk as its last part lands)
//   step      global norm over every rank's shards (non-finite flag, clip),
//             AdamW: on the device for device chunks; for offloaded chunks by
//             the vectorised CPU AdamW on pinned host memory, on a worker
//             thread, chunk by chunk in the order the next forward gathers
//             them (the embeddings' chunk first). train_step returns once the
//             loss, the norm and the skip decision are known; the next
//             forward's gather of chunk c waits (on the host) for c's update
//             only, then queues c's upload on the offload stream and makes
//             the communication stream wait for it, so the GPU runs the
//             chunks already updated while the CPU works on the next ones.
//             Evaluation, gather_params/gather_grads, checkpoint export and
//             import, load_params and the destructor first wait for every
//             pending update (finish_pending_update). Results are the same
//             bits as a synchronous finish (the same element-wise updates,
//             later; test_gemini compares them).
//
// Placement: offload_optim_frac of the parameters (whole chunks, nearest
// fraction, from the head's end, whose gradients are ready first in
// backward and whose parameters are needed last in forward) keep master
// weights, moments and gradients in pinned host memory; offload_param_frac
// (at most offload_optim_frac: an offloaded part is updated on the host)
// also keeps their compute-dtype parts there between uses, uploaded at each
// gather. On the CPU (MPI) the streams are synchronous and "host" is just
// another buffer, and the CPU AdamW runs on the worker thread as on the GPU;
// a CPU run waits for it before train_step returns (GeminiOptions::CpuUpdate
// Auto: overlapping it with a forward on the same cores only oversubscribes
// them), while the CPU tests also run it overlapped and on demand, so they
// exercise the same waits as a GPU run.
//
// The training recipe (RecipeSupport: all of it), as data_parallel carries
// it: each micro-batch's extras (mixup/cutmix targets, the noise key and
// first sample of its masks) go to the model; with parameter groups the
// views are split at parameter boundaries of the padded chunk space (device
// parts for the StepFinisher; an offloaded part's CPU AdamW runs once per
// run of equal multipliers); the weight average of device parts is the
// StepFinisher's, that of offloaded parts a pinned host buffer the worker
// updates right after the part's AdamW, so swap_ema and the checkpoint part
// `ema` wait for pending updates as every other reader does.
//
// Every rank runs the same sequence of collectives whatever its data: a rank
// with no images in a micro-batch (or an evaluation batch) still walks the
// hooks, joining every gather and reduce-scatter.
#pragma once

#include <memory>
#include <vector>

#include "model/params.h"
#include "parallel/plugin.h"

namespace vit::parallel {

std::unique_ptr<Plugin> make_gemini(const PluginOptions& opts, const model::ViTConfig& cfg,
                                    const model::ComputeConfig& compute, int max_micro_batch, const PluginEnv& env);

// The chunks of a layout: whole segments in backward order (head first),
// each chunk at most max_elems elements unless one segment alone is larger.
std::vector<std::vector<model::Segment>> gemini_chunk_groups(const model::ParamLayout& layout, int64_t max_elems);

// How many chunks (from the first, in the order given) to offload so that
// their share of the elements is nearest to frac: 0 for frac 0, all for
// frac 1, at least one for any frac > 0.
int gemini_offload_count(const std::vector<int64_t>& chunk_elems, float frac);

}  // namespace vit::parallel
