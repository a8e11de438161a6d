// Main of the GPU tests: exits 77 (ctest's SKIP_RETURN_CODE) with a visible line when no
// CUDA device is usable, so machines without a GPU report the tests as skipped, not passed.
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime.h>

#include <cstdio>

#include <catch2/catch.hpp>

#include <mcd/kernels/cuda/runtime.h>

int main(int argc, char* argv[]) {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess || n == 0) {
    // The reason matters on a GPU machine: an old driver also reads as "no device".
    std::printf("SKIP: no CUDA device (%s)\n",
                status != cudaSuccess ? cudaGetErrorName(status) : "0 devices");
    return 77;
  }
  std::printf("CUDA device 0: %s\n", mcd::kernels::cuda::device_name(0).c_str());
  return Catch::Session().run(argc, argv);
}
