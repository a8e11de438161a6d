// Strided elementwise CUDA kernels (CPU twins: kernels/cpu/elementwise.cpp, same formulas):
// copies with dtype conversion, fills, unary and binary maps, relu's mask. Every operand is
// described by a StridedArgs (shape and per-operand strides in elements, passed to the kernel
// by value), so views, broadcasts (stride 0) and transposes need no contiguous copy. One
// thread per output element in a grid-stride loop; outputs are overwritten. Launches go to
// `stream` on the current device; pointers are device memory.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include <mcd/kernels/cpu/elementwise.h>

namespace mcd::kernels::cuda {

inline constexpr int kMaxStridedRank = 8;
inline constexpr int kMaxStridedOperands = 3;

// Shape and strides of up to three operands (output first) after merging dimensions
// (cpu::make_geometry); rank >= 1 and numel = product of shape.
struct StridedArgs {
  int rank = 0;
  std::int64_t numel = 0;
  std::int64_t shape[kMaxStridedRank] = {};
  std::int64_t strides[kMaxStridedOperands][kMaxStridedRank] = {};
};

// Converts a host geometry; throws naming `op` when its merged rank exceeds kMaxStridedRank.
StridedArgs to_strided_args(const cpu::StridedGeometry& g, const char* op);

// out = src over operands (out, src); To and From are float, double or std::int64_t.
template <class To, class From>
void copy_cuda(const StridedArgs& g, To* out, const From* src, cudaStream_t stream);

// out = value over operand (out); T is float, double or std::int64_t.
template <class T>
void fill_cuda(const StridedArgs& g, T* out, T value, cudaStream_t stream);

// out = op(x) over operands (out, x); `scalar` as in cpu::unary_cpu.
template <class T>
void unary_cuda(cpu::UnaryOp op, const StridedArgs& g, T* out, const T* x, double scalar,
                cudaStream_t stream);

// out = op(a, b) over operands (out, a, b).
template <class T>
void binary_cuda(cpu::BinaryOp op, const StridedArgs& g, T* out, const T* a, const T* b,
                 cudaStream_t stream);

// out = x > 0 ? v : 0 over operands (out, v, x).
template <class T>
void relu_mask_cuda(const StridedArgs& g, T* out, const T* v, const T* x, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
