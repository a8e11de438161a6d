// Sum and argmax kernels (reduce.h). A sum over the last axis (inner = 1: rows, the common
// case of losses and mean) gives each row a thread group that reduces in double; a sum over
// another axis gives each output its own thread, which walks the reduced axis (neighbouring
// threads read neighbouring elements). Argmax walks its axis serially per output, so ties and
// NaNs resolve exactly as in the CPU loop.
#include <mcd/kernels/cuda/reduce.h>

#include <algorithm>

#include <mcd/kernels/cuda/check.h>

#include "reduce_rows.cuh"

namespace mcd::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 16;

unsigned blocks_for(std::int64_t n) {
  return static_cast<unsigned>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}

template <class T>
struct SumArgs {
  const T* in;  // (rows, reduced)
  T* out;       // (rows)
  std::int64_t reduced;
};

template <class T>
struct SumRow {
  template <class G>
  static __device__ void row(const G& grp, const SumArgs<T>& a, std::int64_t r) {
    const T* in = a.in + r * a.reduced;
    double acc[1] = {0.0};
    for (std::int64_t c = grp.rank(); c < a.reduced; c += grp.size())
      acc[0] += static_cast<double>(in[c]);
    grp.sum(acc);
    if (grp.rank() == 0) a.out[r] = static_cast<T>(acc[0]);
  }
};

template <class T>
__global__ void sum_strided_kernel(std::int64_t outer, std::int64_t reduced, std::int64_t inner,
                                   const T* in, T* out) {
  const std::int64_t n = outer * inner;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t o = k / inner, i = k - o * inner;
    const T* p = in + o * reduced * inner + i;
    double acc = 0.0;
    for (std::int64_t r = 0; r < reduced; ++r)
      acc += static_cast<double>(p[r * inner]);
    out[k] = static_cast<T>(acc);
  }
}

template <class T>
__global__ void argmax_kernel(std::int64_t outer, std::int64_t reduced, std::int64_t inner,
                              const T* in, std::int64_t* out) {
  const std::int64_t n = outer * inner;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t o = k / inner, i = k - o * inner;
    const T* p = in + o * reduced * inner + i;
    std::int64_t best = 0;
    T best_v = p[0];
    for (std::int64_t r = 1; r < reduced; ++r) {
      const T v = p[r * inner];
      if (v > best_v) best_v = v, best = r;
    }
    out[k] = best;
  }
}

}  // namespace

template <class T>
void sum_outer_inner_cuda(std::int64_t outer, std::int64_t reduced, std::int64_t inner, const T* in,
                          T* out, cudaStream_t stream) {
  if (inner == 1) {
    detail::launch_rows<SumRow<T>>("launch of sum rows kernel", outer, reduced,
                                   SumArgs<T>{in, out, reduced}, stream);
    return;
  }
  const std::int64_t n = outer * inner;
  if (n == 0) return;
  sum_strided_kernel<<<blocks_for(n), kThreads, 0, stream>>>(outer, reduced, inner, in, out);
  MCD_CUDA_CHECK_LAUNCH("sum_strided_kernel");
}

template <class T>
void argmax_outer_inner_cuda(std::int64_t outer, std::int64_t reduced, std::int64_t inner,
                             const T* in, std::int64_t* out, cudaStream_t stream) {
  const std::int64_t n = outer * inner;
  if (n == 0) return;
  MCD_CUDA_REQUIRE(reduced > 0, "argmax (CUDA): empty reduced dimension");
  argmax_kernel<<<blocks_for(n), kThreads, 0, stream>>>(outer, reduced, inner, in, out);
  MCD_CUDA_CHECK_LAUNCH("argmax_kernel");
}

template void sum_outer_inner_cuda<float>(std::int64_t, std::int64_t, std::int64_t, const float*,
                                          float*, cudaStream_t);
template void sum_outer_inner_cuda<double>(std::int64_t, std::int64_t, std::int64_t, const double*,
                                           double*, cudaStream_t);
template void argmax_outer_inner_cuda<float>(std::int64_t, std::int64_t, std::int64_t, const float*,
                                             std::int64_t*, cudaStream_t);
template void argmax_outer_inner_cuda<double>(std::int64_t, std::int64_t, std::int64_t,
                                              const double*, std::int64_t*, cudaStream_t);

}  // namespace mcd::kernels::cuda
