// What the fused-loss kernel variants share (distill_loss.cu dispatches among them): the
// launch arguments, the arithmetic helpers that keep every variant on the CPU kernel's formulas,
// and the launchers of the row-per-warp (distill_loss_row_warp.cu) and row-split
// (distill_loss_row_split.cu) variants. Every variant writes the same outputs and leaves the
// workspace's counter at zero; they differ only in how a row is mapped onto threads.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/distill_loss.h>
#include <mcd/kernels/cuda/runtime.h>

#include "float_math.cuh"
#include "row_group.cuh"

namespace mcd::kernels::cuda::detail {

inline constexpr std::size_t kWorkspaceHeader =
    256;  // the counter, padded to keep partials aligned

template <class T>
struct LossArgs {
  const T* logits[kMaxDistillStudents];
  const T* tangents[kMaxDistillStudents];  // JVP only
  const T* qt;                             // (B, V) or null: no teacher
  const T* lqt;                            // forward only
  const std::int64_t* labels;
  const T* alpha;
  const T* beta;
  T* ce;    // (K, B): ce, or ce_t for the JVP
  T* kl;    // (K, B): kl, or kl_t
  T* loss;  // (K): loss, or loss_t
  T* grad;  // (K, B, V) or null
  unsigned* counter;
  double* partials;  // K * B doubles: per-row or per-block weighted terms, student-major
  int k;
  std::int64_t b, v;
  double tau, inv_tau, inv_b;
  bool cache_z;  // general kernel, block groups: z fits in dynamic shared memory
};

// Row max in T across a warp; NaN never wins, as in the CPU reference's `z > m ? z : m`.
template <class T>
__device__ __forceinline__ T warp_max_t(T x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const T y = __shfl_xor_sync(kFullMask, x, off);
    x = y > x ? y : x;
  }
  return x;
}

// row_per_warp: rows of at most this many elements (a lane holds V / 32 of them in registers;
// float64 rows are capped lower to stay clear of register spills).
// Lets `kernel` take `bytes` of dynamic shared memory. Without opting in, a kernel's static and
// dynamic shared memory together may not exceed 48 KiB, so a request just under 48 KiB can
// already fail; when the kernel's current limit is too low it is raised to the most the device
// allows, never lowered (another thread may be launching the same kernel with more).
template <class Kernel>
inline void allow_dynamic_shared_memory(Kernel kernel, std::size_t bytes) {
  cudaFuncAttributes fa{};
  MCD_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  if (bytes <= static_cast<std::size_t>(fa.maxDynamicSharedSizeBytes)) return;
  const std::size_t most = max_shared_memory_per_block(current_device()) - fa.sharedSizeBytes;
  MCD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(std::max(bytes, most))));
}

inline constexpr std::int64_t kRowWarpMaxV32 = 1024;
inline constexpr std::int64_t kRowWarpMaxV64 = 256;
bool row_warp_applies(std::int64_t v, std::size_t elem_bytes);
template <class T, bool JVP>
void launch_row_warp(const LossArgs<T>& a, cudaStream_t stream);

// row_split: true where the device launches clusters, the kernels were compiled for sm_90 or
// later and a row's slice fits in shared memory. log_of_prob (forward only): log qT is
// computed from qT and teacher_log_prob is not read.
bool row_split_applies(std::int64_t v, std::size_t elem_bytes);
template <class T, bool JVP>
void launch_row_split(const LossArgs<T>& a, bool log_of_prob, cudaStream_t stream);

}  // namespace mcd::kernels::cuda::detail
