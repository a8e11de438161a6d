// Sum and argmax over the middle axis of a contiguous (outer, reduced, inner) array.
// Sums accumulate in double for float32 inputs so that long reductions stay accurate.
#include <mcd/kernels/cpu/reduce.h>

#include <vector>

namespace mcd::kernels::cpu {

template <class T>
void sum_outer_inner_cpu(std::int64_t outer, std::int64_t reduced, std::int64_t inner, const T* in,
                         T* out) {
  if (inner == 1) {
#pragma omp parallel for if (outer * reduced > (1 << 15)) schedule(static)
    for (std::int64_t o = 0; o < outer; ++o) {
      const T* row = in + o * reduced;
      double acc = 0.0;
      for (std::int64_t r = 0; r < reduced; ++r)
        acc += row[r];
      out[o] = static_cast<T>(acc);
    }
    return;
  }
#pragma omp parallel for if (outer * reduced * inner > (1 << 15)) schedule(static)
  for (std::int64_t o = 0; o < outer; ++o) {
    std::vector<double> acc(static_cast<std::size_t>(inner), 0.0);
    for (std::int64_t r = 0; r < reduced; ++r) {
      const T* row = in + (o * reduced + r) * inner;
      for (std::int64_t i = 0; i < inner; ++i)
        acc[i] += row[i];
    }
    for (std::int64_t i = 0; i < inner; ++i)
      out[o * inner + i] = static_cast<T>(acc[i]);
  }
}

template <class T>
void argmax_outer_inner_cpu(std::int64_t outer, std::int64_t reduced, std::int64_t inner,
                            const T* in, std::int64_t* out) {
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t i = 0; i < inner; ++i) {
      std::int64_t best = 0;
      T best_v = in[o * reduced * inner + i];
      for (std::int64_t r = 1; r < reduced; ++r) {
        const T v = in[(o * reduced + r) * inner + i];
        if (v > best_v) best_v = v, best = r;
      }
      out[o * inner + i] = best;
    }
}

template void sum_outer_inner_cpu<float>(std::int64_t, std::int64_t, std::int64_t, const float*,
                                         float*);
template void sum_outer_inner_cpu<double>(std::int64_t, std::int64_t, std::int64_t, const double*,
                                          double*);
template void argmax_outer_inner_cpu<float>(std::int64_t, std::int64_t, std::int64_t, const float*,
                                            std::int64_t*);
template void argmax_outer_inner_cpu<double>(std::int64_t, std::int64_t, std::int64_t,
                                             const double*, std::int64_t*);

}  // namespace mcd::kernels::cpu
