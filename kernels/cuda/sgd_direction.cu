// Sgd::lookahead_direction on the device. Every product and sum goes through a
// round-to-nearest intrinsic, which nvcc never fuses, in the CPU loop's order, so the
// direction equals the CPU's bit for bit (as multi_tensor_optim.cu does for the step).
#include <mcd/kernels/cuda/sgd_direction.h>

#include <mcd/kernels/cuda/check.h>

#include "exact_arith.cuh"

namespace mcd::kernels::cuda {
namespace {

using namespace exact;  // every operation rounded alone, as on the CPU

constexpr int kThreads = 256;

template <class T>
struct Coeffs {
  T weight_decay, momentum, one_minus_dampening;
  bool wd, m, hb, n;  // weight decay, momentum, an existing buffer, Nesterov
};

template <class T>
__global__ void sgd_direction_kernel(std::int64_t n, const T* p, const T* g, const T* buf,
                                     Coeffs<T> c, T* out) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    T d = g[i];
    if (c.wd) d = add(g[i], mul(c.weight_decay, p[i]));
    if (c.m) {
      const T b = c.hb ? add(mul(buf[i], c.momentum), mul(c.one_minus_dampening, d)) : d;
      d = c.n ? add(d, mul(c.momentum, b)) : b;
    }
    out[i] = d;
  }
}

}  // namespace

template <class T>
void sgd_direction_cuda(std::int64_t n, const T* p, const T* g, const T* buf,
                        const SgdStepArgs& args, T* out, cudaStream_t stream) {
  if (n == 0) return;
  const bool m = args.momentum != 0.0;
  MCD_CUDA_REQUIRE(!(m && args.has_buffer && buf == nullptr),
                   "sgd_direction_cuda: momentum with a buffer needs the buffer");
  const Coeffs<T> c{static_cast<T>(args.weight_decay),
                    static_cast<T>(args.momentum),
                    static_cast<T>(1.0 - args.dampening),
                    args.weight_decay != 0.0,
                    m,
                    m && args.has_buffer,
                    m && args.nesterov};
  const int blocks = static_cast<int>(std::min<std::int64_t>((n + kThreads - 1) / kThreads, 65535));
  sgd_direction_kernel<T><<<blocks, kThreads, 0, stream>>>(n, p, g, buf, c, out);
  MCD_CUDA_CHECK_LAUNCH("sgd_direction_kernel");
}

template void sgd_direction_cuda<float>(std::int64_t, const float*, const float*, const float*,
                                        const SgdStepArgs&, float*, cudaStream_t);
template void sgd_direction_cuda<double>(std::int64_t, const double*, const double*, const double*,
                                         const SgdStepArgs&, double*, cudaStream_t);

}  // namespace mcd::kernels::cuda
