// cuBLAS and cuDNN handles, one per (device, stream), created on first use and kept for the
// process's lifetime (like the default streams: work may still be queued at exit), and the
// TF32 switch shared by the GEMM and convolution wrappers.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

namespace mcd::kernels::cuda {

// The handle for work on `stream` of `device`, bound to that stream. Thread-safe.
cublasHandle_t cublas_handle(int device, cudaStream_t stream);
cudnnHandle_t cudnn_handle(int device, cudaStream_t stream);

// TF32 tensor-core math for float32 GEMMs and convolutions: OFF by default, so float32 results
// are IEEE float32 products and sums (the CPU parity tests rely on this). Switching it on
// trades about 10 bits of mantissa in the products for speed; meant for timing runs only.
// Affects calls made after it; convolution algorithms are cached per setting.
void set_allow_tf32(bool allow);
bool allow_tf32();

// Convolution algorithms: false (the default) times every candidate once per shape and takes
// the fastest, as cudnn.benchmark does; true takes cuDNN's heuristic ranking with
// deterministic algorithms first, so repeated runs give bit-identical results.
void set_conv_deterministic(bool deterministic);
bool conv_deterministic();

}  // namespace mcd::kernels::cuda
