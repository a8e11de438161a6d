// Elementwise CPU kernels, templated on float and double. Outputs are overwritten.
#pragma once
#include <cstdint>

#include <mcd/kernels/cpu/strided.h>

namespace mcd::kernels::cpu {

enum class UnaryOp { Neg, Exp, Log, Sqrt, Relu, Sigmoid, Softplus, Pow, Scale, AddScalar };
enum class BinaryOp { Add, Sub, Mul, Div, Pow };

// out[i] = op(x[i]); `scalar` is the exponent (Pow), factor (Scale) or addend (AddScalar).
template <class T>
void unary_cpu(UnaryOp op, std::int64_t n, const T* x, T* out, double scalar = 0.0);

// out = op(a, b) over geometry g with operands (out, a, b).
template <class T>
void binary_cpu(BinaryOp op, const StridedGeometry& g, T* out, const T* a, const T* b);

// out = src over geometry g with operands (out, src): strided copy, also used for casts.
template <class To, class From>
void copy_cpu(const StridedGeometry& g, To* out, const From* src);

}  // namespace mcd::kernels::cpu
