// Elementwise CPU kernels. The contiguous inner runs are written so the compiler vectorises
// them; large tensors are split across threads with OpenMP.
#include <cmath>

#include <mcd/kernels/cpu/elementwise.h>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelGrain = 1 << 15;

template <class T>
inline T softplus_value(T x) {
  // log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact for large |x|.
  return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <class T, class F>
void map_unary(std::int64_t n, const T* x, T* out, F f) {
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
  for (std::int64_t i = 0; i < n; ++i)
    out[i] = f(x[i]);
}

template <class T, class F>
void map_binary(const StridedGeometry& g, T* out, const T* a, const T* b, F f) {
  const int rank = static_cast<int>(g.shape.size());
  // Fast path: one merged dimension (contiguous or scalar-broadcast operands).
  if (rank == 1) {
    const std::int64_t n = g.shape[0], so = g.strides[0][0], sa = g.strides[1][0],
                       sb = g.strides[2][0];
    if (so == 1 && sa == 1 && sb == 1) {
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = f(a[i], b[i]);
      return;
    }
#pragma omp parallel for if (n > kParallelGrain) schedule(static)
    for (std::int64_t i = 0; i < n; ++i)
      out[i * so] = f(a[i * sa], b[i * sb]);
    return;
  }
  // General path: parallelise over the outermost dimension.
  const std::int64_t outer = g.shape[0];
  StridedGeometry inner_g = g;
  inner_g.shape.erase(inner_g.shape.begin());
  for (int k = 0; k < 3; ++k)
    inner_g.strides[k].erase(inner_g.strides[k].begin());
#pragma omp parallel for if (g.numel() > kParallelGrain) schedule(static)
  for (std::int64_t o = 0; o < outer; ++o) {
    T* po = out + o * g.strides[0][0];
    const T* pa = a + o * g.strides[1][0];
    const T* pb = b + o * g.strides[2][0];
    for_each_run(inner_g, [&](const auto& off, std::int64_t n, const auto& st) {
      T* ro = po + off[0];
      const T* ra = pa + off[1];
      const T* rb = pb + off[2];
      if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
        for (std::int64_t i = 0; i < n; ++i)
          ro[i] = f(ra[i], rb[i]);
      } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
        const T bv = rb[0];
        for (std::int64_t i = 0; i < n; ++i)
          ro[i] = f(ra[i], bv);
      } else {
        for (std::int64_t i = 0; i < n; ++i)
          ro[i * st[0]] = f(ra[i * st[1]], rb[i * st[2]]);
      }
    });
  }
}

}  // namespace

template <class T>
void unary_cpu(UnaryOp op, std::int64_t n, const T* x, T* out, double scalar) {
  const T s = static_cast<T>(scalar);
  switch (op) {
    case UnaryOp::Neg:
      return map_unary(n, x, out, [](T v) { return -v; });
    case UnaryOp::Exp:
      return map_unary(n, x, out, [](T v) { return std::exp(v); });
    case UnaryOp::Log:
      return map_unary(n, x, out, [](T v) { return std::log(v); });
    case UnaryOp::Sqrt:
      return map_unary(n, x, out, [](T v) { return std::sqrt(v); });
    case UnaryOp::Relu:
      return map_unary(n, x, out, [](T v) { return v > T(0) ? v : T(0); });
    case UnaryOp::Sigmoid:
      return map_unary(n, x, out, [](T v) {
        // Two branches so that exp never overflows.
        if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
        const T e = std::exp(v);
        return e / (T(1) + e);
      });
    case UnaryOp::Softplus:
      return map_unary(n, x, out, [](T v) { return softplus_value(v); });
    case UnaryOp::Pow:
      if (scalar == 2.0) return map_unary(n, x, out, [](T v) { return v * v; });
      return map_unary(n, x, out, [s](T v) { return std::pow(v, s); });
    case UnaryOp::Scale:
      return map_unary(n, x, out, [s](T v) { return v * s; });
    case UnaryOp::AddScalar:
      return map_unary(n, x, out, [s](T v) { return v + s; });
  }
}

template <class T>
void binary_cpu(BinaryOp op, const StridedGeometry& g, T* out, const T* a, const T* b) {
  switch (op) {
    case BinaryOp::Add:
      return map_binary(g, out, a, b, [](T u, T v) { return u + v; });
    case BinaryOp::Sub:
      return map_binary(g, out, a, b, [](T u, T v) { return u - v; });
    case BinaryOp::Mul:
      return map_binary(g, out, a, b, [](T u, T v) { return u * v; });
    case BinaryOp::Div:
      return map_binary(g, out, a, b, [](T u, T v) { return u / v; });
    case BinaryOp::Pow:
      return map_binary(g, out, a, b, [](T u, T v) { return std::pow(u, v); });
  }
}

template <class To, class From>
void copy_cpu(const StridedGeometry& g, To* out, const From* src) {
  for_each_run(g, [&](const auto& off, std::int64_t n, const auto& st) {
    To* o = out + off[0];
    const From* s = src + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (std::int64_t i = 0; i < n; ++i)
        o[i] = static_cast<To>(s[i]);
    } else {
      for (std::int64_t i = 0; i < n; ++i)
        o[i * st[0]] = static_cast<To>(s[i * st[1]]);
    }
  });
}

template void unary_cpu<float>(UnaryOp, std::int64_t, const float*, float*, double);
template void unary_cpu<double>(UnaryOp, std::int64_t, const double*, double*, double);
template void binary_cpu<float>(BinaryOp, const StridedGeometry&, float*, const float*,
                                const float*);
template void binary_cpu<double>(BinaryOp, const StridedGeometry&, double*, const double*,
                                 const double*);
#define MCD_COPY(To, From) \
  template void copy_cpu<To, From>(const StridedGeometry&, To*, const From*);
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

}  // namespace mcd::kernels::cpu
