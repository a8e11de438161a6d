// CUDA graph capture and replay (graph.h).
#include <mcd/kernels/cuda/graph.h>

#include <atomic>
#include <string>

#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>

namespace mcd::kernels::cuda {
namespace {

PoolId next_pool() {
  static std::atomic<PoolId> last{0};
  return ++last;
}

// Ends a capture that cannot become a graph: drops what was captured, clears the error the
// capture left (a broken capture reports itself on the next call otherwise) and gives the
// pool's memory back.
void abandon(const Stream& stream, DeviceAllocator& allocator, PoolId pool) {
  cudaGraph_t partial = nullptr;
  (void)cudaStreamEndCapture(stream.get(), &partial);
  if (partial != nullptr) (void)cudaGraphDestroy(partial);
  (void)cudaGetLastError();
  allocator.end_private_pool();
  allocator.release_private_pool(pool);
}

}  // namespace

Graph::Graph(int device, cudaGraphExec_t exec, PoolId pool)
    : device_(device), exec_(exec), pool_(pool) {}

std::unique_ptr<Graph> Graph::capture(const Stream& stream, const std::function<void()>& record) {
  const int device = stream.device();
  DeviceGuard guard(device);
  DeviceAllocator& allocator = DeviceAllocator::for_device(device);
  // The shared pool's unused segments go back first (the eager runs before a capture cached a
  // step's worth of them), so that the graph's memory replaces that cache instead of adding to
  // it: the peak a captured step reaches is then about one step's, not two.
  allocator.empty_cache();
  const PoolId pool = next_pool();
  allocator.begin_private_pool(pool);
  // Relaxed: the caching allocator may still call cudaMalloc for a new segment while capturing
  // (memory it gets is the graph's, so that is safe); what would run work now still fails.
  const cudaError_t began = cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeRelaxed);
  if (began != cudaSuccess) {
    (void)cudaGetLastError();
    allocator.end_private_pool();
    allocator.release_private_pool(pool);
    fail("CUDA graph capture on device {}: cudaStreamBeginCapture failed: {}", device,
         cudaGetErrorString(began));
  }
  try {
    record();
  } catch (const std::exception& e) {
    abandon(stream, allocator, pool);
    fail("CUDA graph capture on device {}: the captured code failed: {}", device, e.what());
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream.get(), &graph);
  allocator.end_private_pool();
  if (ended != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    allocator.release_private_pool(pool);
    fail(
        "CUDA graph capture on device {}: cudaStreamEndCapture failed: {} (a stream forked from "
        "the captured one was not joined back, or the code did what a capture forbids)",
        device, cudaGetErrorString(ended));
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph keeps what it needs
  if (made != cudaSuccess) {
    (void)cudaGetLastError();
    allocator.release_private_pool(pool);
    fail("CUDA graph capture on device {}: cudaGraphInstantiate failed: {}", device,
         cudaGetErrorString(made));
  }
  return std::unique_ptr<Graph>(new Graph(device, exec, pool));
}

void Graph::replay(const Stream& stream) const {
  MCD_CHECK(stream.device() == device_,
            "Graph::replay: a graph of device {} on a stream of device {}", device_,
            stream.device());
  DeviceGuard guard(device_);
  MCD_CUDA_CHECK(cudaGraphLaunch(exec_, stream.get()));
}

Graph::~Graph() {
  try {
    DeviceGuard guard(device_);
    MCD_CUDA_CHECK(cudaDeviceSynchronize());
    MCD_CUDA_CHECK(cudaGraphExecDestroy(exec_));
    DeviceAllocator::for_device(device_).release_private_pool(pool_);
  } catch (...) {  // a device torn down at exit: nothing left to free
  }
}

}  // namespace mcd::kernels::cuda
