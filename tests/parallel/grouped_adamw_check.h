// The per-parameter lr and weight decay check shared by test_recipe_parallel
// (data-parallel plugins, gemini) and test_recipe_hybrid (tp slices, stages,
// ZeRO-1 parts): AdamW computed on the host in double from the gradients a
// run gathered after each step, parameter by parameter with its multipliers
// (torch.optim.AdamW's formula), against the parameters the run gathered.
//
// Per parameter and step, the largest difference is compared with the size
// of that parameter's update: fp32 AdamW rounds each step at ~1e-7 of the
// weights (O(0.1)), ~1e-8 absolute against updates of lr x multiplier of
// 1e-5 and more, so 1e-3 of the update is ample, while a multiplier of
// another layer (2x apart or more), or decay where there is none, misses by
// half the update or more. Include after boost/test/unit_test.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/params.h"
#include "parallel/param_groups.h"

namespace grouped_adamw {

// init: the weights before the first step; grads[t], params[t]: the gathered
// gradient of step t + 1 and the weights after it (full model, fp32).
inline void check(const vit::model::ParamLayout& layout, const std::vector<vit::parallel::ParamMultipliers>& mult,
                  double lr, double weight_decay, const std::vector<float>& init,
                  const std::vector<std::vector<float>>& grads, const std::vector<std::vector<float>>& params,
                  int steps) {
  const size_t N = init.size();
  std::vector<double> w(N), m(N, 0.0), v(N, 0.0);
  for (size_t i = 0; i < N; ++i) w[i] = init[i];
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (int t = 1; t <= steps; ++t) {
    const std::vector<float>& g = grads[static_cast<size_t>(t - 1)];
    for (size_t j = 0; j < mult.size(); ++j) {
      const vit::model::ParamInfo& pi = layout.params()[j];
      const double plr = lr * mult[j].lr, pwd = weight_decay * mult[j].wd;
      for (int64_t e = pi.offset; e < pi.offset + pi.numel; ++e) {
        m[e] = b1 * m[e] + (1 - b1) * g[e];
        v[e] = b2 * v[e] + (1 - b2) * double(g[e]) * g[e];
        w[e] *= 1.0 - plr * pwd;
        w[e] -= plr * (m[e] / (1 - std::pow(b1, t))) / (std::sqrt(v[e] / (1 - std::pow(b2, t))) + eps);
      }
    }
    const std::vector<float>& got = params[static_cast<size_t>(t - 1)];
    for (size_t j = 0; j < mult.size(); ++j) {
      const vit::model::ParamInfo& pi = layout.params()[j];
      double diff = 0, update = 0;
      for (int64_t e = pi.offset; e < pi.offset + pi.numel; ++e) {
        diff = std::max(diff, std::abs(got[e] - w[e]));
        const double before = t == 1 ? double(init[e]) : double(params[static_cast<size_t>(t - 2)][e]);
        update = std::max(update, std::abs(w[e] - before));
      }
      BOOST_TEST(diff <= 1e-3 * update + 1e-9, pi.name << " step " << t << ": " << diff << " vs update " << update);
    }
  }
}

}  // namespace grouped_adamw
