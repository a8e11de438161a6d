// Whether the NCCL tests can run here. NCCL is loaded at run time: without it they warn and pass,
// unless MCD_REQUIRE_NCCL=1 (the GPU check sets it), where its absence fails the test.
#pragma once
#include <cstdlib>
#include <string>

#include <catch2/catch.hpp>

#include <mcd/kernels/cuda/nccl_collectives.h>

namespace mcd::testing {

inline bool nccl_here() {
  std::string why;
  if (kernels::cuda::NcclCollectives::available(&why)) return true;
  const char* required = std::getenv("MCD_REQUIRE_NCCL");
  if (required != nullptr && std::string(required) == "1") FAIL("NCCL is not available: " << why);
  WARN("NCCL is not available, not tested: " << why);
  return false;
}

}  // namespace mcd::testing
