// The parameter layout with shards: tensor-parallel slices (column, row,
// qkv-column), pipeline stages, and the maps between a named full tensor and
// a rank's slice.
#define BOOST_TEST_MODULE param_layout
#include <boost/test/unit_test.hpp>

#include <numeric>
#include <vector>

#include "model/params.h"

using namespace vit;
using model::ParamLayout;
using model::ShardSpec;
using model::TpSplit;

namespace {

model::ViTConfig small_vit() {
  model::ViTConfig c;
  c.image_size = 16;
  c.patch_size = 4;
  c.hidden = 24;
  c.depth = 4;
  c.heads = 6;
  c.mlp_dim = 36;
  c.num_classes = 5;
  return c;
}

ShardSpec tp(int size, int rank) {
  ShardSpec s;
  s.tp_size = size;
  s.tp_rank = rank;
  return s;
}

// A full flat buffer whose every element is its own index.
std::vector<float> indices(const ParamLayout& full) {
  std::vector<float> v(static_cast<size_t>(full.total()));
  std::iota(v.begin(), v.end(), 0.0f);
  return v;
}

}  // namespace

BOOST_AUTO_TEST_CASE(full_layout_is_unchanged_by_the_shard_machinery) {
  model::ViTConfig b16;  // ViT-B/16, 3 labels: the Hugging Face count
  BOOST_TEST(ParamLayout(b16).total() == 85800963);
  const ParamLayout full(small_vit());
  BOOST_TEST(full.global_total() == full.total());
  for (const auto& p : full.params()) {
    BOOST_TEST(p.shape == p.global_shape);
    BOOST_TEST(static_cast<int>(p.split) == static_cast<int>(TpSplit::Replicated));
  }
}

BOOST_AUTO_TEST_CASE(tensor_parallel_slices_follow_megatron) {
  const model::ViTConfig cfg = small_vit();
  const ParamLayout full(cfg);
  const std::vector<float> all = indices(full);
  const int64_t C = cfg.hidden, F = cfg.mlp_dim;
  for (int size : {2, 3}) {
    for (int r = 0; r < size; ++r) {
      const ParamLayout mine(cfg, tp(size, r));
      BOOST_TEST(mine.params().size() == full.params().size());
      std::vector<float> local(static_cast<size_t>(mine.total()));
      mine.extract_local(all.data(), local.data());
      auto at = [&](const std::string& name, int64_t i) {
        return local[static_cast<size_t>(mine[mine.index_of(name)].offset + i)];
      };
      auto full_at = [&](const std::string& name, int64_t row, int64_t col) {
        const auto& p = full[full.index_of(name)];
        return all[static_cast<size_t>(p.offset + row * (p.shape.size() > 1 ? p.shape[1] : 1) + col)];
      };
      // qkv: q, k and v each split by heads (rows), all columns.
      const auto& qkv = mine[mine.index_of("blocks.1.attn.qkv.weight")];
      BOOST_TEST(qkv.shape == std::vector<int64_t>({3 * C / size, C}));
      BOOST_TEST(static_cast<int>(qkv.split) == static_cast<int>(TpSplit::QkvColumn));
      const int64_t rows = C / size;
      for (int part = 0; part < 3; ++part) {
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t c = 0; c < C; c += 7) {
            BOOST_TEST(at("blocks.1.attn.qkv.weight", (part * rows + i) * C + c) ==
                       full_at("blocks.1.attn.qkv.weight", part * C + r * rows + i, c));
          }
          BOOST_TEST(at("blocks.1.attn.qkv.bias", part * rows + i) ==
                     full_at("blocks.1.attn.qkv.bias", 0, part * C + r * rows + i));
        }
      }
      // proj (row-parallel): every row, columns of this rank; its bias replicated.
      BOOST_TEST(mine[mine.index_of("blocks.2.attn.proj.weight")].shape == std::vector<int64_t>({C, C / size}));
      BOOST_TEST(at("blocks.2.attn.proj.weight", 3 * (C / size) + 1) ==
                 full_at("blocks.2.attn.proj.weight", 3, r * (C / size) + 1));
      BOOST_TEST(mine[mine.index_of("blocks.2.attn.proj.bias")].shape == std::vector<int64_t>({C}));
      // fc1 (column-parallel) and its bias; fc2 (row-parallel).
      BOOST_TEST(mine[mine.index_of("blocks.0.mlp.fc1.weight")].shape == std::vector<int64_t>({F / size, C}));
      BOOST_TEST(at("blocks.0.mlp.fc1.bias", 2) == full_at("blocks.0.mlp.fc1.bias", 0, r * (F / size) + 2));
      BOOST_TEST(mine[mine.index_of("blocks.0.mlp.fc2.weight")].shape == std::vector<int64_t>({C, F / size}));
      BOOST_TEST(at("blocks.0.mlp.fc2.weight", (C - 1) * (F / size)) ==
                 full_at("blocks.0.mlp.fc2.weight", C - 1, r * (F / size)));
      // Replicated: LayerNorms, embeddings, head.
      BOOST_TEST(mine[mine.index_of("pos_embed")].numel == full[full.index_of("pos_embed")].numel);
      BOOST_TEST(at("head.weight", 17) == full_at("head.weight", 0, 17));
    }
  }
}

BOOST_AUTO_TEST_CASE(slices_reassemble_the_full_model) {
  const model::ViTConfig cfg = small_vit();
  const ParamLayout full(cfg);
  const std::vector<float> all = indices(full);
  for (int size : {1, 2, 3, 6}) {
    std::vector<float> rebuilt(all.size(), -1.0f);
    int64_t split_elems = 0;
    for (int r = 0; r < size; ++r) {
      const ParamLayout mine(cfg, tp(size, r));
      std::vector<float> local(static_cast<size_t>(mine.total()));
      mine.extract_local(all.data(), local.data());
      mine.insert_local(local.data(), rebuilt.data());
      for (const auto& p : mine.params()) split_elems += p.split == TpSplit::Replicated ? 0 : p.numel;
    }
    BOOST_TEST(rebuilt == all);  // every element placed back, none left at -1
    int64_t split_full = 0;
    const ParamLayout as_tp(cfg, tp(size, 0));
    for (const auto& p : as_tp.params()) {
      if (p.split != TpSplit::Replicated) split_full += full[full.index_of(p.name)].numel;
    }
    BOOST_TEST(split_elems == (size == 1 ? 0 : split_full));  // split tensors: no element held twice
  }
}

// ParamLayout::slice_runs (what checkpoints name a slice by): the runs
// tile the local slice in order, each maps to the full tensor's elements
// slice_of copies, and over the tp ranks the runs of a split tensor cover
// the full tensor exactly once (one run column, three qkv-column, one per
// row for a row split).
BOOST_AUTO_TEST_CASE(slice_runs_name_the_elements_slice_of_copies) {
  const model::ViTConfig cfg = small_vit();
  const ParamLayout full(cfg);
  const std::vector<float> all = indices(full);
  for (int size : {1, 2, 3}) {
    std::vector<int> seen(all.size(), 0);  // times a full element is named by a split tensor's runs
    for (int r = 0; r < size; ++r) {
      const ParamLayout mine(cfg, tp(size, r));
      std::vector<float> local(static_cast<size_t>(mine.total()));
      mine.extract_local(all.data(), local.data());
      for (size_t i = 0; i < mine.params().size(); ++i) {
        const model::ParamInfo& p = mine.params()[i];
        const int64_t full_at = full[full.index_of(p.name)].offset;
        const auto runs = mine.slice_runs(static_cast<int>(i));
        BOOST_TEST_CONTEXT("tp " << size << " rank " << r << " " << p.name) {
          const size_t expected = p.split == TpSplit::Replicated || p.split == TpSplit::Column ? 1u
                                  : p.split == TpSplit::QkvColumn                             ? 3u
                                                                                                : static_cast<size_t>(p.global_shape[0]);
          BOOST_TEST(runs.size() == expected);
          int64_t at = 0;
          for (const auto& run : runs) {
            BOOST_TEST_REQUIRE(run.local == at);  // in local order, no gap
            for (int64_t k = 0; k < run.count; ++k) {
              BOOST_TEST_REQUIRE(local[static_cast<size_t>(p.offset + run.local + k)] ==
                                 all[static_cast<size_t>(full_at + run.full + k)]);
              if (p.split != TpSplit::Replicated) ++seen[static_cast<size_t>(full_at + run.full + k)];
            }
            at += run.count;
          }
          BOOST_TEST(at == p.numel);
        }
      }
    }
    if (size == 1) continue;
    const ParamLayout as_tp(cfg, tp(size, 0));
    for (const auto& p : as_tp.params()) {
      if (p.split == TpSplit::Replicated) continue;
      const model::ParamInfo& f = full[full.index_of(p.name)];
      for (int64_t k = 0; k < f.numel; ++k) {
        BOOST_TEST_REQUIRE(seen[static_cast<size_t>(f.offset + k)] == 1, p.name << " element " << k << ", tp " << size);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(pipeline_stages_hold_their_blocks) {
  const model::ViTConfig cfg = small_vit();
  const ParamLayout full(cfg);
  const ParamLayout first(cfg, ShardSpec::stage(cfg, 2, 0)), last(cfg, ShardSpec::stage(cfg, 2, 1));
  BOOST_TEST(first.patch_w >= 0);
  BOOST_TEST(first.norm_w == -1);
  BOOST_TEST(last.patch_w == -1);
  BOOST_TEST(last.head_w >= 0);
  BOOST_TEST(first.has_block(1));
  BOOST_TEST(!first.has_block(2));
  BOOST_TEST(last.has_block(2));
  BOOST_TEST(last.first_block() == 2);
  BOOST_TEST(first.total() + last.total() == full.total());
  BOOST_TEST(first.segments().size() == 3u);  // embeddings, block 0, block 1
  BOOST_TEST(last.segments().back().kind == model::Segment::Head);
  BOOST_TEST(last.find("blocks.0.ln1.weight") == -1);
  // Stage 1's buffer is the tail of the full one, element for element.
  const std::vector<float> all = indices(full);
  std::vector<float> local(static_cast<size_t>(last.total()));
  last.extract_local(all.data(), local.data());
  BOOST_TEST(local.front() == static_cast<float>(first.total()));
  BOOST_TEST(local.back() == static_cast<float>(full.total() - 1));
  BOOST_CHECK_THROW(ShardSpec::stage(cfg, 3, 0), Error);  // 4 blocks over 3 stages
  BOOST_CHECK_THROW(ParamLayout(cfg, tp(4, 0)), Error);  // 6 heads over 4 ranks
}
