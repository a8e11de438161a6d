// Row-wise reductions: launches one thread group (row_group.cuh) per row, a warp for rows of
// up to kWarpRowMax elements (several rows per block) and a whole block for longer rows. An
// Op is a struct with `template <class G> static __device__ void row(const G&, const Args&,
// std::int64_t r)`; every thread of the group calls it with the same r (the group reductions
// need all of them), so row loops and branches on Args must be uniform across the group.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include <mcd/kernels/cuda/check.h>

#include "row_group.cuh"

namespace mcd::kernels::cuda::detail {

inline constexpr std::int64_t kWarpRowMax = 1024;
inline constexpr int kRowThreads = 256;
inline constexpr std::int64_t kMaxRowBlocks = std::int64_t{1} << 16;

template <class Op, class Args>
__global__ void warp_rows_kernel(Args a, std::int64_t rows) {
  const WarpGroup grp{};
  const std::int64_t warps = blockDim.x / 32;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * warps + threadIdx.x / 32; r < rows;
       r += static_cast<std::int64_t>(gridDim.x) * warps)
    Op::row(grp, a, r);
}

template <class Op, class Args>
__global__ void block_rows_kernel(Args a, std::int64_t rows) {
  __shared__ double scratch[kGroupScratch];
  const BlockGroup grp{scratch};
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    Op::row(grp, a, r);
}

// Runs Op over `rows` rows of `v` elements each on `stream`; `name` labels launch errors.
template <class Op, class Args>
void launch_rows(const char* name, std::int64_t rows, std::int64_t v, const Args& a,
                 cudaStream_t stream) {
  if (rows == 0) return;
  if (v <= kWarpRowMax) {
    const std::int64_t warps = kRowThreads / 32;
    const auto blocks = static_cast<unsigned>(std::min((rows + warps - 1) / warps, kMaxRowBlocks));
    warp_rows_kernel<Op><<<blocks, kRowThreads, 0, stream>>>(a, rows);
  } else {
    const auto blocks = static_cast<unsigned>(std::min(rows, kMaxRowBlocks));
    block_rows_kernel<Op><<<blocks, kRowThreads, 0, stream>>>(a, rows);
  }
  check_status(cudaGetLastError(), name, __FILE__, __LINE__);
}

}  // namespace mcd::kernels::cuda::detail
