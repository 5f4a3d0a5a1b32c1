// Include in one file of each GPU test executable, after defining
// BOOST_TEST_MODULE and including <boost/test/unit_test.hpp>.
//
// A global fixture that ends the run with exit code 77 (ctest: "Skipped")
// and a visible message when no CUDA GPU is present, so a GPU test never
// passes silently on a machine without one.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "core/device.h"

struct VitRequireGpu {
  VitRequireGpu() {
    if (!vit::built_with_cuda()) {
      std::printf("SKIPPED: built without CUDA (configure with the CUDA toolkit to run this test)\n");
      std::fflush(stdout);
      std::_Exit(77);
    }
    if (vit::cuda_device_count() == 0) {
      std::printf("SKIPPED: no CUDA GPU visible on this machine\n");
      std::fflush(stdout);
      std::_Exit(77);
    }
  }
};
BOOST_TEST_GLOBAL_FIXTURE(VitRequireGpu);
