// Strided elementwise kernels (elementwise.h; CPU twin kernels/cpu/elementwise.cpp). One
// thread per output element in a grid-stride loop; each thread turns its linear index into
// per-operand offsets with the merged shape, so contiguous operands (merged to rank 1) cost
// no division. The maps are the CPU's formulas with the same float/double math functions
// (no fast-math), so float32 results agree to a few ulp.
#include <mcd/kernels/cuda/elementwise.h>

#include <algorithm>
#include <string>

#include <mcd/kernels/cuda/check.h>

#include "float_math.cuh"

namespace mcd::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = std::int64_t{1} << 16;

unsigned blocks_for(std::int64_t n) {
  return static_cast<unsigned>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}

void check_launch(const char* kernel) {
  check_status(cudaGetLastError(), kernel, __FILE__, __LINE__);
}

// Element offsets, in the first N operands, of linear index i (row-major over g.shape).
template <int N>
__device__ __forceinline__ void offsets_of(const StridedArgs& g, std::int64_t i,
                                           std::int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k)
    off[k] = 0;
  for (int d = g.rank - 1; d > 0; --d) {
    const std::int64_t q = i / g.shape[d];
    const std::int64_t idx = i - q * g.shape[d];
    i = q;
#pragma unroll
    for (int k = 0; k < N; ++k)
      off[k] += idx * g.strides[k][d];
  }
#pragma unroll
  for (int k = 0; k < N; ++k)
    off[k] += i * g.strides[k][0];
}

#define MCD_GRID_STRIDE(i, n)                                                                      \
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

template <class To, class From>
__global__ void copy_kernel(StridedArgs g, To* out, const From* src) {
  MCD_GRID_STRIDE(i, g.numel) {
    std::int64_t off[2];
    offsets_of(g, i, off);
    out[off[0]] = static_cast<To>(src[off[1]]);
  }
}

template <class T>
__global__ void fill_kernel(StridedArgs g, T* out, T value) {
  MCD_GRID_STRIDE(i, g.numel) {
    std::int64_t off[1];
    offsets_of(g, i, off);
    out[off[0]] = value;
  }
}

template <class T, class F>
__global__ void map1_kernel(StridedArgs g, T* out, const T* x, F f) {
  MCD_GRID_STRIDE(i, g.numel) {
    std::int64_t off[2];
    offsets_of(g, i, off);
    out[off[0]] = f(x[off[1]]);
  }
}

template <class T, class F>
__global__ void map2_kernel(StridedArgs g, T* out, const T* a, const T* b, F f) {
  MCD_GRID_STRIDE(i, g.numel) {
    std::int64_t off[3];
    offsets_of(g, i, off);
    out[off[0]] = f(a[off[1]], b[off[2]]);
  }
}

#undef MCD_GRID_STRIDE

using detail::abs_t;
using detail::exp_t;
using detail::log1p_t;
using detail::log_t;
using detail::pow_t;
using detail::sqrt_t;

// ---- unary maps (cpu::UnaryOp)
template <class T>
struct NegOp {
  __device__ T operator()(T v) const { return -v; }
};
template <class T>
struct ExpOp {
  __device__ T operator()(T v) const { return exp_t(v); }
};
template <class T>
struct LogOp {
  __device__ T operator()(T v) const { return log_t(v); }
};
template <class T>
struct SqrtOp {
  __device__ T operator()(T v) const { return sqrt_t(v); }
};
template <class T>
struct ReluOp {
  __device__ T operator()(T v) const { return v > T(0) ? v : T(0); }
};
template <class T>
struct SigmoidOp {
  __device__ T operator()(T v) const {
    // Two branches so that exp never overflows.
    if (v >= T(0)) return T(1) / (T(1) + exp_t(-v));
    const T e = exp_t(v);
    return e / (T(1) + e);
  }
};
template <class T>
struct SoftplusOp {
  // log(1 + e^x) = max(x, 0) + log1p(e^-|x|); the max as std::max(x, 0) (NaN propagates).
  __device__ T operator()(T v) const { return (v < T(0) ? T(0) : v) + log1p_t(exp_t(-abs_t(v))); }
};
template <class T>
struct SquareOp {
  __device__ T operator()(T v) const { return v * v; }
};
template <class T>
struct PowScalarOp {
  T s;
  __device__ T operator()(T v) const { return pow_t(v, s); }
};
template <class T>
struct ScaleOp {
  T s;
  __device__ T operator()(T v) const { return v * s; }
};
template <class T>
struct AddScalarOp {
  T s;
  __device__ T operator()(T v) const { return v + s; }
};

// ---- binary maps (cpu::BinaryOp) and relu's mask
template <class T>
struct AddOp {
  __device__ T operator()(T u, T v) const { return u + v; }
};
template <class T>
struct SubOp {
  __device__ T operator()(T u, T v) const { return u - v; }
};
template <class T>
struct MulOp {
  __device__ T operator()(T u, T v) const { return u * v; }
};
template <class T>
struct DivOp {
  __device__ T operator()(T u, T v) const { return u / v; }
};
template <class T>
struct PowOp {
  __device__ T operator()(T u, T v) const { return pow_t(u, v); }
};
template <class T>
struct ReluMaskOp {
  __device__ T operator()(T v, T x) const { return x > T(0) ? v : T(0); }
};

template <class T, class F>
void launch_map1(const StridedArgs& g, T* out, const T* x, F f, cudaStream_t stream) {
  if (g.numel == 0) return;
  map1_kernel<<<blocks_for(g.numel), kThreads, 0, stream>>>(g, out, x, f);
  check_launch("launch of map1_kernel (unary_cuda)");
}

template <class T, class F>
void launch_map2(const StridedArgs& g, T* out, const T* a, const T* b, F f, cudaStream_t stream) {
  if (g.numel == 0) return;
  map2_kernel<<<blocks_for(g.numel), kThreads, 0, stream>>>(g, out, a, b, f);
  check_launch("launch of map2_kernel (binary_cuda)");
}

}  // namespace

StridedArgs to_strided_args(const cpu::StridedGeometry& g, const char* op) {
  const int rank = static_cast<int>(g.shape.size());
  MCD_CUDA_REQUIRE(rank >= 1 && rank <= kMaxStridedRank && g.operands <= kMaxStridedOperands,
                   std::string(op) + " (CUDA): the operands' strides need " + std::to_string(rank) +
                       " dimensions after merging, more than the " +
                       std::to_string(kMaxStridedRank) + " the kernels take");
  StridedArgs a;
  a.rank = rank;
  a.numel = g.numel();
  for (int d = 0; d < rank; ++d) {
    a.shape[d] = g.shape[d];
    for (int k = 0; k < g.operands; ++k)
      a.strides[k][d] = g.strides[k][d];
  }
  return a;
}

template <class To, class From>
void copy_cuda(const StridedArgs& g, To* out, const From* src, cudaStream_t stream) {
  if (g.numel == 0) return;
  copy_kernel<<<blocks_for(g.numel), kThreads, 0, stream>>>(g, out, src);
  check_launch("launch of copy_kernel");
}

template <class T>
void fill_cuda(const StridedArgs& g, T* out, T value, cudaStream_t stream) {
  if (g.numel == 0) return;
  fill_kernel<<<blocks_for(g.numel), kThreads, 0, stream>>>(g, out, value);
  check_launch("launch of fill_kernel");
}

template <class T>
void unary_cuda(cpu::UnaryOp op, const StridedArgs& g, T* out, const T* x, double scalar,
                cudaStream_t stream) {
  const T s = static_cast<T>(scalar);  // as the CPU: the scalar is rounded to T first
  using U = cpu::UnaryOp;
  switch (op) {
    case U::Neg:
      return launch_map1(g, out, x, NegOp<T>{}, stream);
    case U::Exp:
      return launch_map1(g, out, x, ExpOp<T>{}, stream);
    case U::Log:
      return launch_map1(g, out, x, LogOp<T>{}, stream);
    case U::Sqrt:
      return launch_map1(g, out, x, SqrtOp<T>{}, stream);
    case U::Relu:
      return launch_map1(g, out, x, ReluOp<T>{}, stream);
    case U::Sigmoid:
      return launch_map1(g, out, x, SigmoidOp<T>{}, stream);
    case U::Softplus:
      return launch_map1(g, out, x, SoftplusOp<T>{}, stream);
    case U::Pow:
      if (scalar == 2.0) return launch_map1(g, out, x, SquareOp<T>{}, stream);
      return launch_map1(g, out, x, PowScalarOp<T>{s}, stream);
    case U::Scale:
      return launch_map1(g, out, x, ScaleOp<T>{s}, stream);
    case U::AddScalar:
      return launch_map1(g, out, x, AddScalarOp<T>{s}, stream);
  }
  throw_error("unary_cuda: unknown op " + std::to_string(static_cast<int>(op)));
}

template <class T>
void binary_cuda(cpu::BinaryOp op, const StridedArgs& g, T* out, const T* a, const T* b,
                 cudaStream_t stream) {
  using B = cpu::BinaryOp;
  switch (op) {
    case B::Add:
      return launch_map2(g, out, a, b, AddOp<T>{}, stream);
    case B::Sub:
      return launch_map2(g, out, a, b, SubOp<T>{}, stream);
    case B::Mul:
      return launch_map2(g, out, a, b, MulOp<T>{}, stream);
    case B::Div:
      return launch_map2(g, out, a, b, DivOp<T>{}, stream);
    case B::Pow:
      return launch_map2(g, out, a, b, PowOp<T>{}, stream);
  }
  throw_error("binary_cuda: unknown op " + std::to_string(static_cast<int>(op)));
}

template <class T>
void relu_mask_cuda(const StridedArgs& g, T* out, const T* v, const T* x, cudaStream_t stream) {
  launch_map2(g, out, v, x, ReluMaskOp<T>{}, stream);
}

#define MCD_COPY(To, From) \
  template void copy_cuda<To, From>(const StridedArgs&, To*, const From*, cudaStream_t);
MCD_COPY(float, float)
MCD_COPY(float, double)
MCD_COPY(float, std::int64_t)
MCD_COPY(double, float)
MCD_COPY(double, double)
MCD_COPY(double, std::int64_t)
MCD_COPY(std::int64_t, float)
MCD_COPY(std::int64_t, double)
MCD_COPY(std::int64_t, std::int64_t)
#undef MCD_COPY

#define MCD_INSTANTIATE(T)                                                                \
  template void fill_cuda<T>(const StridedArgs&, T*, T, cudaStream_t);                    \
  template void unary_cuda<T>(cpu::UnaryOp, const StridedArgs&, T*, const T*, double,     \
                              cudaStream_t);                                              \
  template void binary_cuda<T>(cpu::BinaryOp, const StridedArgs&, T*, const T*, const T*, \
                               cudaStream_t);                                             \
  template void relu_mask_cuda<T>(const StridedArgs&, T*, const T*, const T*, cudaStream_t);
MCD_INSTANTIATE(float)
MCD_INSTANTIATE(double)
#undef MCD_INSTANTIATE
template void fill_cuda<std::int64_t>(const StridedArgs&, std::int64_t*, std::int64_t,
                                      cudaStream_t);

}  // namespace mcd::kernels::cuda
