// CUDA graph capture and replay (graph.h).
#include <mcd/kernels/cuda/graph.h>

#include <atomic>
#include <string>

#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>

namespace mcd::kernels::cuda {

class Graph::Pool {
 public:
  explicit Pool(int device) : device_(device) {
    static std::atomic<PoolId> last{0};
    id_ = ++last;
  }
  // Its graphs are gone (each waited for the device first): the memory goes back.
  ~Pool() {
    try {
      DeviceGuard guard(device_);
      DeviceAllocator::for_device(device_).release_private_pool(id_);
    } catch (...) {  // a device torn down at exit: nothing left to free
    }
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  PoolId id() const { return id_; }

 private:
  int device_;
  PoolId id_ = 0;
};

namespace {

// Ends a capture that cannot become a graph: drops what was captured and clears the error the
// capture left (a broken capture reports itself on the next call otherwise). The pool's memory
// goes back with the last reference to it.
void abandon(const Stream& stream, DeviceAllocator& allocator) {
  cudaGraph_t partial = nullptr;
  (void)cudaStreamEndCapture(stream.get(), &partial);
  if (partial != nullptr) (void)cudaGraphDestroy(partial);
  (void)cudaGetLastError();
  allocator.end_private_pool();
}

}  // namespace

Graph::Graph(int device, cudaGraphExec_t exec, std::shared_ptr<Pool> pool)
    : device_(device), exec_(exec), pool_(std::move(pool)) {}

std::unique_ptr<Graph> Graph::capture(const Stream& stream, const std::function<void()>& record,
                                      const Graph* share_memory_with) {
  const int device = stream.device();
  MCD_CHECK(share_memory_with == nullptr || share_memory_with->device_ == device,
            "CUDA graph capture on device {}: cannot share the memory of a graph of device {}",
            device, share_memory_with ? share_memory_with->device_ : device);
  DeviceGuard guard(device);
  DeviceAllocator& allocator = DeviceAllocator::for_device(device);
  // The shared pool's unused segments go back first (the eager runs before a capture cached a
  // step's worth of them), so that the graph's memory replaces that cache instead of adding to
  // it: the peak a captured step reaches is then about one step's, not two.
  allocator.empty_cache();
  std::shared_ptr<Pool> pool =
      share_memory_with != nullptr ? share_memory_with->pool_ : std::make_shared<Pool>(device);
  allocator.begin_private_pool(pool->id());
  // Relaxed: the caching allocator may still call cudaMalloc for a new segment while capturing
  // (memory it gets is the graph's, so that is safe); what would run work now still fails.
  const cudaError_t began = cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeRelaxed);
  if (began != cudaSuccess) {
    (void)cudaGetLastError();
    allocator.end_private_pool();
    fail("CUDA graph capture on device {}: cudaStreamBeginCapture failed: {}", device,
         cudaGetErrorString(began));
  }
  try {
    record();
  } catch (const std::exception& e) {
    abandon(stream, allocator);
    fail("CUDA graph capture on device {}: the captured code failed: {}", device, e.what());
  } catch (...) {  // whatever was thrown, the stream must leave capture and the pool window end
    abandon(stream, allocator);
    throw;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream.get(), &graph);
  allocator.end_private_pool();
  if (ended != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
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
    fail("CUDA graph capture on device {}: cudaGraphInstantiate failed: {}", device,
         cudaGetErrorString(made));
  }
  return std::unique_ptr<Graph>(new Graph(device, exec, std::move(pool)));
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
  } catch (...) {  // a device torn down at exit: nothing left to free
  }
  // pool_ goes with this graph; with its last graph, the pool's memory goes back.
}

}  // namespace mcd::kernels::cuda
