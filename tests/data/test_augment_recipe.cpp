// The training recipe's augmentation: each TrivialAugment/RandAugment op on
// hand-made images against what auto_augment.h says it does, the magnitude
// table, the sampling of ops; random erasing; mixup and cutmix (Beta draws,
// the cutmix box and its corrected lambda, and in the loader: every mixed
// image equals the documented mix of its two unmixed images, with the
// partner's label and the drawn lambda as its target, the same on 1 or 2
// ranks, with any thread count); determinism for a seed and labels that
// stay right.
#define BOOST_TEST_MODULE augment_recipe
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "core/rng.h"
#include "data/augment.h"
#include "data/auto_augment.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/mix.h"
#include "data/sampler.h"
#include "data_prep/prep.h"
#include "data_test_util.h"

using namespace vit_test;
using namespace vit::data;

namespace {

constexpr int kS = 32;
using Image = std::vector<uint8_t>;

// A deterministic test picture with structure in both directions and colours.
Image picture(int S = 8, uint64_t seed = 1) {
  Image img(static_cast<size_t>(S) * S * 3);
  vit::Rng rng(seed);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x)
      for (int c = 0; c < 3; ++c) img[(y * S + x) * 3 + c] = static_cast<uint8_t>((x * 29 + y * 7 + c * 61 + rng.below(9)) % 256);
  return img;
}
uint8_t at(const Image& img, int S, int x, int y, int c) { return img[(static_cast<size_t>(y) * S + x) * 3 + c]; }

Image apply(AugOp op, float m, Image img, int S = 8) {
  Image scratch(img.size());
  apply_aug_op(AugOpChoice{op, m}, img.data(), S, scratch.data());
  return img;
}

struct Files {
  TempDir tmp{"augment_recipe"};
  std::string raw;
  Files() {
    copy_mini_beans(tmp.path() / "in", {{"train", 6}});
    vit::data_prep::PrepOptions o;
    o.inputs = {tmp.str("in")};
    o.output = tmp.str("raw.h5");
    o.image_size = kS;
    o.storage = "raw";
    o.splits = {"train"};
    vit::data_prep::prepare_dataset(o);
    raw = o.output;
  }
};
Files& files() {
  static Files f;
  return f;
}

// Every batch of one epoch: images, labels, second labels, lambdas, indices.
struct Epoch {
  std::vector<Image> images;  // one per image, in batch order
  std::vector<int32_t> labels, labels_b;
  std::vector<float> lambda;
  std::vector<int64_t> indices;
};
Epoch run_epoch(Loader& l, int64_t epoch) {
  Epoch e;
  l.start_epoch(epoch);
  Batch b;
  const size_t img = kS * kS * 3;
  while (l.next(b)) {
    for (int64_t i = 0; i < b.count; ++i) {
      e.images.emplace_back(b.images.as<uint8_t>() + i * img, b.images.as<uint8_t>() + (i + 1) * img);
      e.labels.push_back(b.labels[i]);
      e.indices.push_back(b.indices[i]);
      if (!b.labels_b.empty()) {
        e.labels_b.push_back(b.labels_b[i]);
        e.lambda.push_back(b.mix_lambda[i]);
      }
    }
  }
  return e;
}

}  // namespace

// ---- the ops ------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(geometric_ops_move_pixels_as_documented) {
  const int S = 8;
  const Image p = picture(S);
  BOOST_TEST(apply(AugOp::Identity, 0, p) == p);
  BOOST_TEST(apply(AugOp::ShearX, 0, p) == p);
  BOOST_TEST(apply(AugOp::Rotate, 0, p) == p);
  // TranslateX by +2: y(x, y) = x(x - 2, y); the two left columns black.
  const Image t = apply(AugOp::TranslateX, 2.0f, p);
  const Image ty = apply(AugOp::TranslateY, -3.0f, p);
  bool ok = true;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x)
      for (int c = 0; c < 3; ++c) {
        ok = ok && at(t, S, x, y, c) == (x >= 2 ? at(p, S, x - 2, y, c) : 0);
        ok = ok && at(ty, S, x, y, c) == (y + 3 < S ? at(p, S, x, y + 3, c) : 0);
      }
  BOOST_TEST(ok);
  // Rotate by 90 degrees counter-clockwise about the centre: y(x, y) = x(S-1-y, x).
  const Image r = apply(AugOp::Rotate, 90.0f, p);
  ok = true;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x)
      for (int c = 0; c < 3; ++c) ok = ok && at(r, S, x, y, c) == at(p, S, S - 1 - y, x, c);
  BOOST_TEST(ok);
  // ShearX 0.5: row y takes its pixels from x + 0.5 (y + 0.5), black past the edge.
  const Image sh = apply(AugOp::ShearX, 0.5f, p);
  ok = true;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const int sx = static_cast<int>(std::floor(x + 0.5 + 0.5 * (y + 0.5)));
      for (int c = 0; c < 3; ++c) ok = ok && at(sh, S, x, y, c) == (sx < S ? at(p, S, sx, y, c) : 0);
    }
  BOOST_TEST(ok);
}

BOOST_AUTO_TEST_CASE(colour_ops_do_what_the_table_says) {
  const int S = 8;
  const Image p = picture(S);
  const size_t n = p.size();
  // Brightness -1 (factor 0): black. Brightness +0.5: x * 1.5, clamped and rounded.
  BOOST_TEST(apply(AugOp::Brightness, -1.0f, p) == Image(n, 0));
  const Image br = apply(AugOp::Brightness, 0.5f, p);
  bool ok = true;
  for (size_t i = 0; i < n; ++i) ok = ok && br[i] == std::min(255, static_cast<int>(p[i] * 1.5f + 0.5f));
  BOOST_TEST(ok);
  // Color -1 (factor 0): every pixel its gray value in all three channels.
  const Image gray = apply(AugOp::Color, -1.0f, p);
  ok = true;
  for (size_t i = 0; i < n; i += 3) {
    const float g = 0.2989f * p[i] + 0.587f * p[i + 1] + 0.114f * p[i + 2];
    for (int c = 0; c < 3; ++c) ok = ok && std::abs(gray[i + c] - g) <= 0.5f + 1e-3f;
  }
  BOOST_TEST(ok);
  // Contrast -1: one value, the mean gray, everywhere.
  const Image flat = apply(AugOp::Contrast, -1.0f, p);
  BOOST_TEST(std::all_of(flat.begin(), flat.end(), [&](uint8_t v) { return v == flat[0]; }));
  // Sharpness 0 (factor 1): unchanged; the border never changes.
  BOOST_TEST(apply(AugOp::Sharpness, 0.0f, p) == p);
  const Image sharp = apply(AugOp::Sharpness, 0.9f, p);
  for (int x = 0; x < S; ++x) BOOST_TEST(at(sharp, S, x, 0, 1) == at(p, S, x, 0, 1));
  // Posterize 3 bits: the low 5 bits cleared. Solarize 100: values >= 100 inverted.
  const Image post = apply(AugOp::Posterize, 3.0f, p);
  const Image sol = apply(AugOp::Solarize, 100.0f, p);
  ok = true;
  for (size_t i = 0; i < n; ++i) {
    ok = ok && post[i] == (p[i] & 0xE0);
    ok = ok && sol[i] == (p[i] >= 100 ? 255 - p[i] : p[i]);
  }
  BOOST_TEST(ok);
  // AutoContrast: every channel spans 0..255 afterwards.
  Image dull = p;
  for (auto& v : dull) v = static_cast<uint8_t>(60 + v / 4);
  const Image ac = apply(AugOp::AutoContrast, 0.0f, dull);
  for (int c = 0; c < 3; ++c) {
    uint8_t lo = 255, hi = 0;
    for (size_t i = c; i < n; i += 3) {
      lo = std::min(lo, ac[i]);
      hi = std::max(hi, ac[i]);
    }
    BOOST_TEST(lo == 0);
    BOOST_TEST(hi == 255);
  }
  // Equalize (on 32 x 32: PIL's table needs more than 255 pixels per
  // channel to do anything): a monotone map per channel that spreads a
  // narrow histogram over the whole range.
  Image big = picture(32);
  for (auto& v : big) v = static_cast<uint8_t>(60 + v / 4);
  const Image eq = apply(AugOp::Equalize, 0.0f, big, 32);
  ok = true;
  for (size_t i = 0; i < big.size(); ++i)
    for (size_t j = i % 3; j < big.size(); j += 3) ok = ok && (big[i] < big[j] ? eq[i] <= eq[j] : true);
  BOOST_TEST(ok);
  BOOST_TEST(*std::max_element(eq.begin(), eq.end()) > 230);
  BOOST_TEST(*std::min_element(eq.begin(), eq.end()) < 20);
  // A tiny image stays as it is (step 0, as PIL).
  BOOST_TEST(apply(AugOp::Equalize, 0.0f, dull) == dull);
}

BOOST_AUTO_TEST_CASE(magnitude_table_and_op_sampling) {
  using P = AutoAugmentPolicy;
  BOOST_TEST(aug_magnitude(P::Trivial, AugOp::Rotate, 30, 224) == 135.0f);
  BOOST_TEST(aug_magnitude(P::Rand, AugOp::Rotate, 30, 224) == 30.0f);
  BOOST_TEST(aug_magnitude(P::Trivial, AugOp::TranslateX, 30, 224) == 32.0f, boost::test_tools::tolerance(1e-5f));
  BOOST_TEST(aug_magnitude(P::Rand, AugOp::TranslateY, 30, 331) == 150.0f, boost::test_tools::tolerance(1e-5f));
  BOOST_TEST(aug_magnitude(P::Trivial, AugOp::Posterize, 30, 64) == 2.0f);
  BOOST_TEST(aug_magnitude(P::Rand, AugOp::Posterize, 30, 64) == 4.0f);
  BOOST_TEST(aug_magnitude(P::Rand, AugOp::Posterize, 9, 64) == 7.0f);
  BOOST_TEST(aug_magnitude(P::Trivial, AugOp::Solarize, 0, 64) == 255.0f);
  BOOST_TEST(aug_magnitude(P::Rand, AugOp::Brightness, 9, 64) == 0.27f, boost::test_tools::tolerance(1e-5f));
  BOOST_TEST(aug_magnitude(P::Trivial, AugOp::ShearX, 15, 64) == 0.495f, boost::test_tools::tolerance(1e-5f));

  AugmentOptions o;
  o.seed = 3;
  o.auto_augment = P::Trivial;
  std::map<AugOp, int> seen;
  int negative = 0;
  for (int64_t i = 0; i < 2800; ++i) {
    const auto ops = sample_auto_augment(o, 1, i, 64);
    BOOST_TEST_REQUIRE(ops.size() == 1u);
    ++seen[ops[0].op];
    negative += ops[0].magnitude < 0;
    BOOST_TEST_REQUIRE(ops[0].magnitude == sample_auto_augment(o, 1, i, 64)[0].magnitude);  // deterministic
  }
  BOOST_TEST(seen.size() == 14u);  // every op drawn, each about 200 times
  for (const auto& [op, count] : seen) BOOST_TEST(std::abs(count - 200) <= 60, aug_op_name(op) << " " << count);
  BOOST_TEST(negative > 400);  // signed ops (9 of 14) negated half the time: ~900
  o.auto_augment = P::Rand;
  o.rand_ops = 3;
  o.rand_magnitude = 12;
  const auto r = sample_auto_augment(o, 2, 5, 64);
  BOOST_TEST(r.size() == 3u);
  for (const auto& c : r) BOOST_TEST(std::abs(c.magnitude) == aug_magnitude(P::Rand, c.op, 12, 64));
}

BOOST_AUTO_TEST_CASE(random_erasing_boxes_are_in_range_and_deterministic) {
  AugmentOptions o;
  o.seed = 9;
  o.erase_prob = 0.5f;
  int applied = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const EraseBox b = sample_erase(o, 0, i, 64);
    if (!b.applied) continue;
    ++applied;
    BOOST_TEST_REQUIRE((b.x >= 0 && b.y >= 0 && b.x + b.w <= 64 && b.y + b.h <= 64));
    // Area within [0.02, 1/3] of the image up to the rounding of each side.
    const double area = double(b.w) * b.h / (64.0 * 64.0);
    BOOST_TEST_REQUIRE((area >= 0.02 * 0.7 && area <= (1.0 / 3.0) * 1.3));
    const EraseBox again = sample_erase(o, 0, i, 64);
    BOOST_TEST_REQUIRE((again.x == b.x && again.y == b.y && again.w == b.w && again.h == b.h));
  }
  BOOST_TEST(std::abs(applied - 1000) <= 120);  // probability 0.5 (sd 22)
  // Only the box changes.
  o.erase_prob = 1.0f;
  const Image p = picture(64);
  Image img = p;
  const EraseBox b = sample_erase(o, 1, 7, 64);
  BOOST_TEST_REQUIRE(b.applied);
  erase(o, 1, 7, b, img.data(), 64);
  int changed_inside = 0;
  bool outside_same = true;
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x)
      for (int c = 0; c < 3; ++c) {
        const bool inside = x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h;
        if (inside) changed_inside += at(img, 64, x, y, c) != at(p, 64, x, y, c);
        else outside_same = outside_same && at(img, 64, x, y, c) == at(p, 64, x, y, c);
      }
  BOOST_TEST(outside_same);
  BOOST_TEST(changed_inside > b.w * b.h * 3 * 9 / 10);  // noise: ~1/256 equal by chance
}

// ---- mixup and cutmix ------------------------------------------------------------

BOOST_AUTO_TEST_CASE(beta_draws_have_the_right_moments) {
  for (double alpha : {0.2, 0.8, 1.0, 2.0}) {
    vit::Rng rng(17);
    const int n = 40000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; ++i) {
      const double x = sample_beta(rng, alpha, alpha);
      BOOST_TEST_REQUIRE((x >= 0.0 && x <= 1.0));
      s += x;
      s2 += x * x;
    }
    const double mean = s / n, var = s2 / n - mean * mean, want_var = 1.0 / (4.0 * (2.0 * alpha + 1.0));
    // Mean 1/2 within 5 sd of the sample mean; variance within 5% (n = 4e4).
    BOOST_TEST(std::abs(mean - 0.5) <= 5 * std::sqrt(want_var / n), "alpha " << alpha << " mean " << mean);
    BOOST_TEST(std::abs(var - want_var) <= 0.05 * want_var, "alpha " << alpha << " var " << var);
  }
}

BOOST_AUTO_TEST_CASE(mix_decisions_follow_the_options) {
  AugmentOptions o;
  o.seed = 21;
  BOOST_TEST((sample_mix(o, 0, 0, 32).mode == MixMode::None));  // off by default
  o.mixup_alpha = 0.8f;
  o.mix_prob = 0.0f;
  BOOST_TEST((sample_mix(o, 0, 0, 32).mode == MixMode::None));
  o.mix_prob = 1.0f;
  int mixups = 0, cutmixes = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    const MixDecision d = sample_mix(o, 0, i, 32);
    BOOST_TEST_REQUIRE((d.mode == MixMode::Mixup && d.lam >= 0.0f && d.lam <= 1.0f));
  }
  o.cutmix_alpha = 1.0f;
  o.mix_switch_prob = 0.25f;
  for (int64_t i = 0; i < 2000; ++i) {
    const MixDecision d = sample_mix(o, 3, i, 32);
    if (d.mode == MixMode::Mixup) ++mixups;
    if (d.mode != MixMode::Cutmix) continue;
    ++cutmixes;
    // The box lies in the image and lambda is exactly 1 - its share.
    BOOST_TEST_REQUIRE((d.x0 >= 0 && d.x0 <= d.x1 && d.x1 <= 32 && d.y0 >= 0 && d.y0 <= d.y1 && d.y1 <= 32));
    const float want = static_cast<float>(1.0 - double(d.x1 - d.x0) * (d.y1 - d.y0) / (32.0 * 32.0));
    BOOST_TEST_REQUIRE(d.lam == want);
  }
  BOOST_TEST(std::abs(cutmixes - 500) <= 100);  // switch probability 0.25 (sd 19)
  BOOST_TEST(mixups + cutmixes == 2000);
  // apply_mix: mixup blends, cutmix pastes the box.
  const Image a = picture(32, 1), b = picture(32, 2);
  Image out(a.size());
  MixDecision m;
  m.mode = MixMode::Mixup;
  m.lam = 0.25f;
  apply_mix(m, a.data(), b.data(), out.data(), 32);
  bool ok = true;
  for (size_t i = 0; i < a.size(); ++i) ok = ok && out[i] == static_cast<uint8_t>(0.25f * a[i] + 0.75f * b[i] + 0.5f);
  BOOST_TEST(ok);
  m.mode = MixMode::Cutmix;
  m.x0 = 3, m.x1 = 10, m.y0 = 5, m.y1 = 6;
  apply_mix(m, a.data(), b.data(), out.data(), 32);
  ok = true;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const bool in = x >= 3 && x < 10 && y == 5;
      for (int c = 0; c < 3; ++c) ok = ok && at(out, 32, x, y, c) == at(in ? b : a, 32, x, y, c);
    }
  BOOST_TEST(ok);
  BOOST_TEST(mix_partner(4, 8) == 5);
  BOOST_TEST(mix_partner(5, 8) == 4);
  BOOST_TEST(mix_partner(6, 7) == 6);  // an odd last image pairs with itself
}

BOOST_AUTO_TEST_CASE(loader_mixes_images_into_the_documented_targets) {
  const Hdf5Dataset ds = Hdf5Dataset::open(files().raw);  // 18 images, 6 per class
  AugmentOptions per_image;
  per_image.enabled = true;
  per_image.auto_augment = AutoAugmentPolicy::Trivial;
  per_image.erase_prob = 0.3f;
  per_image.seed = 5;
  AugmentOptions mixing = per_image;
  mixing.mixup_alpha = 0.6f;
  mixing.cutmix_alpha = 1.0f;
  mixing.mix_prob = 0.8f;
  // Batches of 6 over 18 images: 3 steps; shuffled, drop_last off.
  const SamplerOptions one{0, 6, 0, 1, true, false, 8};
  Loader unmixed(ds, "train", one, per_image, LoaderOptions{1, 1, false});
  Loader mixed(ds, "train", one, mixing, LoaderOptions{2, 3, false});
  for (int64_t epoch : {1, 2}) {
    const Epoch u = run_epoch(unmixed, epoch), m = run_epoch(mixed, epoch);
    BOOST_TEST_REQUIRE(u.indices == m.indices);
    BOOST_TEST_REQUIRE(m.lambda.size() == m.images.size());
    int mixed_images = 0;
    for (size_t i = 0; i < m.images.size(); ++i) {
      BOOST_TEST_CONTEXT("epoch " << epoch << " image " << i) {
        // Labels stay right.
        BOOST_TEST(m.labels[i] == ds.label("train", m.indices[i]));
        // The partner is the neighbour in the global batch (steps of 6).
        const size_t step_first = i / 6 * 6, partner = step_first + mix_partner(i - step_first, 6);
        const MixDecision d = sample_mix(mixing, epoch, m.indices[i], kS);
        Image want(u.images[i].size());
        apply_mix(d, u.images[i].data(), u.images[partner].data(), want.data(), kS);
        BOOST_TEST(m.images[i] == want);
        if (d.mode == MixMode::None) {
          BOOST_TEST(m.lambda[i] == 1.0f);
          BOOST_TEST(m.labels_b[i] == m.labels[i]);
        } else {
          BOOST_TEST(m.lambda[i] == d.lam);
          BOOST_TEST(m.labels_b[i] == ds.label("train", m.indices[partner]));
          ++mixed_images;
        }
      }
    }
    BOOST_TEST(mixed_images >= 8);  // p 0.8 of 18
  }
  // Two ranks (3 images each of every global batch of 6): the same images,
  // lambdas and second labels, though partners now sit on the other rank.
  const Epoch whole = run_epoch(mixed, 3);
  std::map<int64_t, size_t> where;
  for (size_t i = 0; i < whole.indices.size(); ++i) where[whole.indices[i]] = i;
  for (int r = 0; r < 2; ++r) {
    Loader half(ds, "train", SamplerOptions{0, 3, r, 2, true, false, 8}, mixing, LoaderOptions{2, 2, false});
    const Epoch e = run_epoch(half, 3);
    for (size_t i = 0; i < e.indices.size(); ++i) {
      const size_t w = where.at(e.indices[i]);
      BOOST_TEST_REQUIRE(e.images[i] == whole.images[w]);
      BOOST_TEST_REQUIRE(e.lambda[i] == whole.lambda[w]);
      BOOST_TEST_REQUIRE(e.labels_b[i] == whole.labels_b[w]);
    }
  }
}

BOOST_AUTO_TEST_CASE(per_image_recipe_is_deterministic_for_a_seed) {
  const Hdf5Dataset ds = Hdf5Dataset::open(files().raw);
  AugmentOptions o;
  o.auto_augment = AutoAugmentPolicy::Rand;
  o.erase_prob = 0.5f;
  o.seed = 1;
  Loader a(ds, "train", SamplerOptions{0, 4, 0, 1, true, false, 2}, o, LoaderOptions{1, 1, false});
  Loader b(ds, "train", SamplerOptions{0, 4, 0, 1, true, false, 2}, o, LoaderOptions{2, 3, false});
  o.seed = 2;
  Loader c(ds, "train", SamplerOptions{0, 4, 0, 1, true, false, 2}, o, LoaderOptions{1, 1, false});
  const Epoch ea = run_epoch(a, 4), eb = run_epoch(b, 4), ec = run_epoch(c, 4);
  BOOST_TEST(ea.images == eb.images);  // threads and prefetch do not matter
  BOOST_TEST(ea.indices == ec.indices);
  int differ = 0, changed = 0;
  for (size_t i = 0; i < ea.images.size(); ++i) {
    differ += ea.images[i] != ec.images[i];
    Image raw(kS * kS * 3);
    ds.read_image("train", ea.indices[i], raw.data());
    changed += ea.images[i] != raw;
    BOOST_TEST(ea.labels[i] == ds.label("train", ea.indices[i]));
  }
  BOOST_TEST(differ >= 15);   // another seed, other ops (18 images; identity draws may agree)
  BOOST_TEST(changed >= 15);  // RandAugment changed nearly every image
  BOOST_TEST(ea.labels_b.empty());  // no mixing: no second labels
}
