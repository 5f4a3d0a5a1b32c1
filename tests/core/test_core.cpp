#define BOOST_TEST_MODULE core
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <set>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace vit;

BOOST_AUTO_TEST_CASE(bf16_round_trip_rounds_to_nearest_even) {
  // 1 + 2^-8 sits exactly halfway between two bf16 values (1 and 1 + 2^-7):
  // ties go to the even mantissa, i.e. down to 1.
  BOOST_TEST(bf16_to_float(float_to_bf16(1.0f + 0x1.0p-8f)) == 1.0f);
  BOOST_TEST(bf16_to_float(float_to_bf16(1.0f + 0x1.8p-8f)) == 1.0f + 0x1.0p-7f);
  BOOST_TEST(bf16_to_float(float_to_bf16(-3.5f)) == -3.5f);
  BOOST_TEST(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

BOOST_AUTO_TEST_CASE(fp16_conversions_match_ieee_half) {
  BOOST_TEST(float_to_f16(1.0f).bits == 0x3c00);
  BOOST_TEST(float_to_f16(-2.0f).bits == 0xc000);
  BOOST_TEST(float_to_f16(65504.0f).bits == 0x7bff);           // largest finite half
  BOOST_TEST(float_to_f16(70000.0f).bits == 0x7c00);           // overflows to inf
  BOOST_TEST(float_to_f16(0x1.0p-24f).bits == 0x0001);         // smallest subnormal
  BOOST_TEST(f16_to_float(f16_t{0x0001}) == 0x1.0p-24f);
  BOOST_TEST(f16_to_float(f16_t{0x3555}) == 0.333251953125f);
  // Every finite half survives half -> float -> half unchanged.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const f16_t h{static_cast<uint16_t>(b)};
    if ((b & 0x7c00) == 0x7c00) continue;
    BOOST_TEST_REQUIRE(float_to_f16(f16_to_float(h)).bits == h.bits);
  }
}

BOOST_AUTO_TEST_CASE(rng_is_deterministic_and_spread) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) BOOST_TEST(a.next_u64() == b.next_u64());
  BOOST_TEST(Rng(42).next_u64() != c.next_u64());
  // Moments of 200k normals: mean ~ 0 (se 0.0022), variance ~ 1 (se 0.0032).
  Rng r(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    s += x;
    s2 += x * x;
  }
  BOOST_TEST(std::abs(s / n) < 0.01);
  BOOST_TEST(std::abs(s2 / n - 1.0) < 0.02);
  // Truncated normal stays inside its bounds.
  for (int i = 0; i < 10000; ++i) {
    const double x = r.trunc_normal(1.0, -2.0, 2.0);
    BOOST_TEST_REQUIRE((x >= -2.0 && x <= 2.0));
  }
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(r.below(10));
  BOOST_TEST(seen.size() == 10u);
  BOOST_TEST(mix_seed(1, 2) != mix_seed(2, 1));
}

BOOST_AUTO_TEST_CASE(buffers_count_peak_memory) {
  reset_peak_memory(Device::CPU);
  const size_t before = memory_stats(Device::CPU).current_bytes;
  {
    Buffer a(1 << 20, Device::CPU);
    Buffer b(1 << 19, Device::CPU);
    BOOST_TEST(memory_stats(Device::CPU).current_bytes == before + (1 << 20) + (1 << 19));
    Buffer c(std::move(a));
    BOOST_TEST(a.empty());
    BOOST_TEST(c.bytes() == size_t{1} << 20);
  }
  BOOST_TEST(memory_stats(Device::CPU).current_bytes == before);
  BOOST_TEST(memory_stats(Device::CPU).peak_bytes == before + (1 << 20) + (1 << 19));
}

BOOST_AUTO_TEST_CASE(tensor_views_check_bounds) {
  Buffer buf(64 * sizeof(float), Device::CPU);
  Tensor t = tensor_of(buf, DType::F32, {4, 16});
  BOOST_TEST(t.numel() == 64);
  BOOST_TEST(t.reshape({2, 32}).dim(-1) == 32);
  BOOST_CHECK_THROW(tensor_of(buf, DType::F32, {4, 16}, 1), Error);
  BOOST_CHECK_THROW(t.reshape({3, 20}), Error);
  BOOST_TEST(t.shape_str() == "(4, 16)");
}

BOOST_AUTO_TEST_CASE(check_macro_names_its_location) {
  try {
    VIT_CHECK(1 + 1 == 3, "arithmetic is broken: ", 42);
    BOOST_FAIL("VIT_CHECK did not throw");
  } catch (const Error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("test_core.cpp:") != std::string::npos);
    BOOST_TEST(what.find("arithmetic is broken: 42") != std::string::npos);
  }
}
