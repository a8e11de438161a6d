// Handle caches of library_handles.h. A handle is created with its device current and bound to
// its stream once; the stream is bound again on every lookup because a destroyed stream's
// address may come back for a new stream, which the handle then serves just the same.
#include <mcd/kernels/cuda/library_handles.h>

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

namespace mcd::kernels::cuda {
namespace {

using Key = std::pair<int, cudaStream_t>;

std::atomic<bool> g_allow_tf32{false};
std::atomic<bool> g_conv_deterministic{false};

template <class Handle, class Create>
Handle lookup(std::map<Key, Handle>& cache, std::mutex& mutex, int device, cudaStream_t stream,
              Create&& create) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({device, stream});
  if (it != cache.end()) return it->second;
  DeviceGuard guard(device);
  Handle h = create();
  cache.emplace(Key{device, stream}, h);
  return h;
}

}  // namespace

cublasHandle_t cublas_handle(int device, cudaStream_t stream) {
  static std::mutex mutex;
  static auto* cache = new std::map<Key, cublasHandle_t>();  // never destroyed (see header)
  cublasHandle_t h = lookup(*cache, mutex, device, stream, [] {
    cublasHandle_t created = nullptr;
    MCD_CUDA_CHECK(cublasCreate(&created));
    // No TF32 unless a call asks for it through its compute type (gemm.cpp).
    MCD_CUDA_CHECK(cublasSetMathMode(created, CUBLAS_DEFAULT_MATH));
    return created;
  });
  MCD_CUDA_CHECK(cublasSetStream(h, stream));
  return h;
}

cudnnHandle_t cudnn_handle(int device, cudaStream_t stream) {
  static std::mutex mutex;
  static auto* cache = new std::map<Key, cudnnHandle_t>();
  cudnnHandle_t h = lookup(*cache, mutex, device, stream, [] {
    cudnnHandle_t created = nullptr;
    MCD_CUDA_CHECK(cudnnCreate(&created));
    return created;
  });
  MCD_CUDA_CHECK(cudnnSetStream(h, stream));
  return h;
}

void set_allow_tf32(bool allow) {
  g_allow_tf32.store(allow);
}

bool allow_tf32() {
  return g_allow_tf32.load();
}

void set_conv_deterministic(bool deterministic) {
  g_conv_deterministic.store(deterministic);
}

bool conv_deterministic() {
  return g_conv_deterministic.load();
}

}  // namespace mcd::kernels::cuda
