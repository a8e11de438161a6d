// Teacher mixture (distill_mixture.h): one block per row, each thread a strided share of the
// row's columns, the row's offset reduced in shared memory in a fixed tree order.
#include <mcd/kernels/cuda/distill_mixture.h>

#include <cmath>
#include <limits>
#include <string>

#include <mcd/kernels/cuda/check.h>

#include "exact_arith.cuh"

namespace mcd::kernels::cuda {
namespace {

constexpr int kThreads = 128;  // a power of two (tree reduction)

template <class T>
struct Guides {
  const T* lp[kMaxMixtureGuides];
  int n;
};

template <class T>
__global__ void teacher_mixture_kernel(Guides<T> g, std::int64_t v, double log_n, T* prob,
                                       T* log_prob, T* offset) {
  __shared__ double partial[kThreads];
  const std::int64_t row = blockIdx.x;
  double off = 0.0;
  for (std::int64_t c = row * v + threadIdx.x; c < (row + 1) * v; c += kThreads) {
    double top = static_cast<double>(g.lp[0][c]);
    for (int j = 1; j < g.n; ++j)
      top = fmax(top, static_cast<double>(g.lp[j][c]));
    double sum = 0.0;
    for (int j = 0; j < g.n; ++j)
      sum += exp(static_cast<double>(g.lp[j][c]) - top);
    const double log_mean = top + log(sum) - log_n;
    prob[c] = static_cast<T>(exp(log_mean));
    log_prob[c] = static_cast<T>(log_mean);
    for (int j = 0; j < g.n; ++j) {
      const double l = static_cast<double>(g.lp[j][c]);
      const double p = exp(l);
      if (p > 0.0) off = exact::add(off, exact::mul(p, l - log_mean));  // as the CPU rounds it
    }
  }
  partial[threadIdx.x] = off;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) offset[row] = static_cast<T>(partial[0] / static_cast<double>(g.n));
}

}  // namespace

template <class T>
void teacher_mixture_cuda(int n, const T* const* log_probs, std::int64_t b, std::int64_t v, T* prob,
                          T* log_prob, T* offset, cudaStream_t stream) {
  MCD_CUDA_REQUIRE(n >= 1 && n <= kMaxMixtureGuides, "teacher_mixture_cuda: " + std::to_string(n) +
                                                         " guides (expected 1 to " +
                                                         std::to_string(kMaxMixtureGuides) + ")");
  MCD_CUDA_REQUIRE(b <= std::numeric_limits<int>::max(),
                   "teacher_mixture_cuda: " + std::to_string(b) + " rows exceed the grid");
  if (b == 0) return;
  Guides<T> g{};
  for (int j = 0; j < n; ++j)
    g.lp[j] = log_probs[j];
  g.n = n;
  teacher_mixture_kernel<T><<<static_cast<unsigned>(b), kThreads, 0, stream>>>(
      g, v, std::log(static_cast<double>(n)), prob, log_prob, offset);
  MCD_CUDA_CHECK_LAUNCH("teacher_mixture_kernel");
}

template void teacher_mixture_cuda<float>(int, const float* const*, std::int64_t, std::int64_t,
                                          float*, float*, float*, cudaStream_t);
template void teacher_mixture_cuda<double>(int, const double* const*, std::int64_t, std::int64_t,
                                           double*, double*, double*, cudaStream_t);

}  // namespace mcd::kernels::cuda
