// float and double overloads of the device math functions, so that templated kernels call
// expf etc. for float32 (as std:: does on the CPU) and exp etc. for float64.
#pragma once
#include <cuda_runtime.h>

namespace mcd::kernels::cuda::detail {

__device__ __forceinline__ float exp_t(float x) {
  return expf(x);
}
__device__ __forceinline__ double exp_t(double x) {
  return exp(x);
}
__device__ __forceinline__ float log_t(float x) {
  return logf(x);
}
__device__ __forceinline__ double log_t(double x) {
  return log(x);
}
__device__ __forceinline__ float log1p_t(float x) {
  return log1pf(x);
}
__device__ __forceinline__ double log1p_t(double x) {
  return log1p(x);
}
__device__ __forceinline__ float sqrt_t(float x) {
  return sqrtf(x);
}
__device__ __forceinline__ double sqrt_t(double x) {
  return sqrt(x);
}
__device__ __forceinline__ float pow_t(float x, float y) {
  return powf(x, y);
}
__device__ __forceinline__ double pow_t(double x, double y) {
  return pow(x, y);
}
__device__ __forceinline__ float abs_t(float x) {
  return fabsf(x);
}
__device__ __forceinline__ double abs_t(double x) {
  return fabs(x);
}

}  // namespace mcd::kernels::cuda::detail
