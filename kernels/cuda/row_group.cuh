// Thread groups that own one row of a row-wise kernel: a warp (short rows, several rows per
// block) or a whole block (long rows). Both reduce in a fixed order and hand every thread of
// the group the same bits, so results are deterministic and every thread may use them.
// Also the 16-byte packs used for vectorised loads and stores.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mcd::kernels::cuda::detail {

inline constexpr unsigned kFullMask = 0xffffffffu;

// VEC consecutive elements moved as one 16-byte (or one element) access.
template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <class T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <class T, int VEC>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& x) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = x;
}

// Butterfly sums: partner sums are added commutatively, so every lane ends with the same bits.
template <int N>
__device__ __forceinline__ void warp_sum(double (&x)[N]) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
#pragma unroll
    for (int j = 0; j < N; ++j)
      x[j] += __shfl_xor_sync(kFullMask, x[j], off);
}

// NaN never wins, as in the CPU reference's `z > m ? z : m`.
__device__ __forceinline__ double warp_max(double x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const double y = __shfl_xor_sync(kFullMask, x, off);
    x = y > x ? y : x;
  }
  return x;
}

// One warp per row: lanes 0..31.
struct WarpGroup {
  __device__ int rank() const { return static_cast<int>(threadIdx.x % 32); }
  __device__ int size() const { return 32; }
  template <int N>
  __device__ void sum(double (&x)[N]) const {
    warp_sum(x);
  }
  __device__ double max(double x) const { return warp_max(x); }
};

inline constexpr int kGroupScratch = 32 * 3;  // doubles: up to 32 warps x 3 values

// One block per row. `scratch` is shared memory of kGroupScratch doubles; every thread of the
// block must call each reduction (they synchronise the block).
struct BlockGroup {
  double* scratch;
  __device__ int rank() const { return static_cast<int>(threadIdx.x); }
  __device__ int size() const { return static_cast<int>(blockDim.x); }

  template <int N>
  __device__ void sum(double (&x)[N]) const {
    static_assert(N <= 3, "kGroupScratch holds three values per warp");
    warp_sum(x);
    const int warp = static_cast<int>(threadIdx.x / 32), warps = static_cast<int>(blockDim.x / 32);
    if (threadIdx.x % 32 == 0)
#pragma unroll
      for (int j = 0; j < N; ++j)
        scratch[warp * N + j] = x[j];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int w = 0; w < warps; ++w)
        acc += scratch[w * N + j];
      x[j] = acc;
    }
    __syncthreads();  // scratch is free again for the next reduction
  }

  __device__ double max(double x) const {
    x = warp_max(x);
    const int warp = static_cast<int>(threadIdx.x / 32), warps = static_cast<int>(blockDim.x / 32);
    if (threadIdx.x % 32 == 0) scratch[warp] = x;
    __syncthreads();
    double m = scratch[0];
    for (int w = 1; w < warps; ++w)
      m = scratch[w] > m ? scratch[w] : m;
    __syncthreads();
    return m;
  }
};

// Deterministic cross-block sums of per-row partials: the block that finishes last (ticket
// from an atomic counter) adds out[s] = (sum_i partials[s * n + i]) / n for s < k in a fixed
// order and resets the counter for the next launch. Every thread of every block must call it.
// Returns nothing; thread 0 of the last block writes out[s].
template <class T>
__device__ void last_block_mean(unsigned* counter, const double* partials, int k, std::int64_t n,
                                T* out, double* scratch) {
  __shared__ bool is_last;
  __threadfence();  // this block's partials are visible to whichever block finishes last
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const BlockGroup g{scratch};
  for (int s = 0; s < k; ++s) {
    double acc[1] = {0.0};
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
      acc[0] += __ldcg(partials + s * n + i);  // L2, never a stale L1 line
    g.sum(acc);
    if (threadIdx.x == 0) out[s] = static_cast<T>(acc[0] / static_cast<double>(n));
  }
  if (threadIdx.x == 0) *counter = 0u;
}

}  // namespace mcd::kernels::cuda::detail
