// Sum reductions over a contiguous (outer, reduced, inner) view. Outputs are overwritten.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

// out[o, i] = sum_r in[o, r, i]; in is contiguous (outer, reduced, inner).
template <class T>
void sum_outer_inner_cpu(std::int64_t outer, std::int64_t reduced, std::int64_t inner, const T* in,
                         T* out);

// out[o, i] = argmax_r in[o, r, i] (first maximum).
template <class T>
void argmax_outer_inner_cpu(std::int64_t outer, std::int64_t reduced, std::int64_t inner,
                            const T* in, std::int64_t* out);

}  // namespace mcd::kernels::cpu
