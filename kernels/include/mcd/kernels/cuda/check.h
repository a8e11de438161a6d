// Error checks for every CUDA runtime, cuBLAS and cuDNN call: a failure throws mcd::Error
// whose message names the call as written, the file and line, and the library's own error
// name and text, so a failure on a remote GPU machine is diagnosable from its log alone.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#if __has_include(<cudnn.h>)
#include <cudnn.h>
#define MCD_HAVE_CUDNN_HEADER 1
#endif

namespace mcd::kernels::cuda {

// Throws mcd::Error with `message` (for .cu files, which cannot include fmt under nvcc).
[[noreturn]] void throw_error(const std::string& message);

// Throws mcd::Error: "<call> failed at <file>:<line>: <what>".
[[noreturn]] void throw_call_error(const char* call, const char* file, int line,
                                   const std::string& what);

inline void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    // A non-sticky error also stays pending as the runtime's "last error"; clear it, or the
    // next launch check would report it again under another kernel's name.
    (void)cudaGetLastError();
    throw_call_error(
        call, file, line,
        std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")");
  }
}

inline void check_status(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw_call_error(
        call, file, line,
        std::string(cublasGetStatusName(status)) + " (" + cublasGetStatusString(status) + ")");
}

#ifdef MCD_HAVE_CUDNN_HEADER
inline void check_status(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw_call_error(call, file, line, cudnnGetErrorString(status));
}
#endif

}  // namespace mcd::kernels::cuda

// MCD_CUDA_CHECK(cudaMalloc(&p, n)); works for cudaError_t, cublasStatus_t and cudnnStatus_t.
#define MCD_CUDA_CHECK(call) ::mcd::kernels::cuda::check_status((call), #call, __FILE__, __LINE__)

// Argument checks in .cu files: MCD_CUDA_REQUIRE(k >= 1, "op: bad k " + std::to_string(k));
#define MCD_CUDA_REQUIRE(cond, message)                      \
  do {                                                       \
    if (!(cond)) ::mcd::kernels::cuda::throw_error(message); \
  } while (0)

// After a <<<...>>> launch: reports a bad configuration (or an earlier asynchronous error)
// under the kernel's name. Errors inside the kernel surface at the next synchronizing call.
#define MCD_CUDA_CHECK_LAUNCH(kernel_name)                                                   \
  ::mcd::kernels::cuda::check_status(cudaGetLastError(), "launch of " kernel_name, __FILE__, \
                                     __LINE__)
