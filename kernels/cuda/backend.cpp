// The CUDA DeviceBackend and the per-thread current stream (backend.h).
#include <mcd/kernels/cuda/backend.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/graph.h>
#include <mcd/kernels/cuda/pinned_pool.h>

namespace mcd::kernels::cuda {
namespace {

// Per-device default streams (never destroyed: storages may be freed during static
// destruction).
const Stream& default_stream(int device) {
  static auto* streams = new StreamPerDevice();
  return streams->get(device);
}

// The innermost StreamScope's stream per device, in this thread.
thread_local std::map<int, const Stream*> scoped_streams;

// Streams lent through DeviceBackend::acquire_stream, per device. They are never destroyed: the
// caching allocator keys cached blocks by stream, and a destroyed stream's handle could come
// back for a new stream that is not ordered after the old one's work.
class StreamPool {
 public:
  const Stream& acquire(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& idle = idle_[device];
    if (idle.empty()) {
      all_.push_back(std::make_unique<Stream>(device));
      return *all_.back();
    }
    const Stream* s = idle.back();
    idle.pop_back();
    return *s;
  }
  void release(const Stream& s) {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_[s.device()].push_back(&s);
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Stream>> all_;
  std::map<int, std::vector<const Stream*>> idle_;
};

StreamPool& stream_pool() {
  static auto* pool = new StreamPool();  // never destroyed, as the default streams
  return *pool;
}

// The engine names a stream by the address of its Stream object; 0 is the default stream.
std::uintptr_t handle_of(const Stream& s) {
  return reinterpret_cast<std::uintptr_t>(&s);
}

const Stream& stream_of(std::uintptr_t handle, int device) {
  if (handle == 0) return default_stream(device);
  const Stream& s = *reinterpret_cast<const Stream*>(handle);
  // Work queued on a stream runs on the stream's device, whatever the caller named.
  MCD_CHECK(s.device() == device, "CUDA: a stream of device {} was given for device {}", s.device(),
            device);
  return s;
}

// A device-to-host copy into a pinned block, arrived once the block's recorded use has run.
class PinnedCopyToHost final : public DeviceBackend::PendingHostCopy {
 public:
  explicit PinnedCopyToHost(PinnedLease lease) : lease_(std::move(lease)) {}
  bool done() const override { return lease_.done(); }
  void wait() override { lease_.wait(); }
  const void* data() const override { return lease_.data(); }

 private:
  PinnedLease lease_;
};

// The current stream of `device`, refusing a capture: a captured copy would read or write its
// pinned block again at every replay, long after the block went to another copy.
const Stream& stream_for_async_copy(int device, const char* op) {
  const Stream& s = current_stream(device);
  MCD_CHECK(!s.capturing(),
            "{}: the current stream of cuda:{} is capturing a CUDA graph; a copy between the host "
            "and the device cannot be part of a graph (copy before the capture, into tensors "
            "the graph reads)",
            op, device);
  return s;
}

class CudaDeviceBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "CUDA"; }
  int device_count() const override { return cuda::device_count(); }
  void* allocate(std::size_t nbytes, int device) override {
    return DeviceAllocator::for_device(device).allocate(nbytes, cuda::current_stream(device).get());
  }
  void deallocate(void* ptr, std::size_t, int device) override {
    DeviceAllocator::for_device(device).free(ptr);
  }
  void copy(void* dst, Device dst_device, const void* src, Device src_device,
            std::size_t nbytes) override {
    if (dst_device.is_cpu()) {
      copy_device_to_host(dst, src, nbytes, cuda::current_stream(src_device.index));
    } else if (src_device.is_cpu()) {
      copy_host_to_device(dst, src, nbytes, cuda::current_stream(dst_device.index));
    } else {
      // Between devices: queued after the pending work of both sides (dst's block may still be
      // read by work queued on its device before it was freed and handed out again), then
      // waited for.
      const Stream& s = cuda::current_stream(src_device.index);
      const Event dst_ready(dst_device.index);
      {
        DeviceGuard on_dst(dst_device.index);
        dst_ready.record(cuda::current_stream(dst_device.index).get());
      }
      DeviceGuard guard(src_device.index);
      MCD_CUDA_CHECK(cudaStreamWaitEvent(s.get(), dst_ready.get(), 0));
      MCD_CUDA_CHECK(
          cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, nbytes, s.get()));
      s.synchronize();
    }
  }
  void synchronize(int device) override {
    DeviceGuard guard(device);
    MCD_CUDA_CHECK(cudaDeviceSynchronize());
  }

  std::unique_ptr<PendingHostCopy> start_copy_to_host(const void* src, Device device,
                                                      std::size_t nbytes) override {
    const Stream& s = stream_for_async_copy(device.index, "HostCopy");
    DeviceGuard guard(device.index);
    PinnedLease lease = PinnedPool::instance().acquire(nbytes);
    if (nbytes > 0)
      MCD_CUDA_CHECK(cudaMemcpyAsync(lease.data(), src, nbytes, cudaMemcpyDeviceToHost, s.get()));
    lease.record_use(s);
    return std::make_unique<PinnedCopyToHost>(std::move(lease));
  }
  void copy_to_device_async(void* dst, Device device, const void* src,
                            std::size_t nbytes) override {
    if (nbytes == 0) return;
    const Stream& s = stream_for_async_copy(device.index, "copy_to_device_async");
    DeviceGuard guard(device.index);
    // The source is staged whole, so the caller may reuse it at once; the block goes back to
    // the pool when the lease ends and is lent again once the copy has run.
    PinnedLease lease = PinnedPool::instance().acquire(nbytes);
    std::memcpy(lease.data(), src, nbytes);
    MCD_CUDA_CHECK(cudaMemcpyAsync(dst, lease.data(), nbytes, cudaMemcpyHostToDevice, s.get()));
    lease.record_use(s);
  }

  std::uintptr_t acquire_stream(int device) override {
    check_device(device);
    return handle_of(stream_pool().acquire(device));
  }
  void release_stream(int device, std::uintptr_t stream) override {
    if (stream != 0) stream_pool().release(stream_of(stream, device));
  }
  std::uintptr_t current_stream(int device) override {
    return handle_of(cuda::current_stream(device));
  }
  void set_current_stream(int device, std::uintptr_t stream) override {
    scoped_streams[device] = &stream_of(stream, device);
  }
  void stream_wait(int device, std::uintptr_t waiter, std::uintptr_t producer) override {
    // A fresh event per wait: the wait binds to the record made here, and destroying an event
    // whose work is pending is allowed (its resources go once the work has run).
    DeviceGuard guard(device);
    const Event done(device);
    done.record(stream_of(producer, device).get());
    stream_of(waiter, device).wait(done.get());
  }

  std::uintptr_t capture_graph(int device, std::uintptr_t stream,
                               const std::function<void()>& record,
                               std::uintptr_t share_memory_with) override {
    return reinterpret_cast<std::uintptr_t>(
        Graph::capture(stream_of(stream, device), record,
                       reinterpret_cast<const Graph*>(share_memory_with))
            .release());
  }
  void replay_graph(int device, std::uintptr_t graph, std::uintptr_t stream) override {
    reinterpret_cast<const Graph*>(graph)->replay(stream_of(stream, device));
  }
  void destroy_graph(int, std::uintptr_t graph) override { delete reinterpret_cast<Graph*>(graph); }

  BlockCacheStats memory_stats(int device) override {
    return DeviceAllocator::for_device(device).stats();
  }
  void reset_peak_memory(int device) override { DeviceAllocator::for_device(device).reset_peak(); }
  void empty_cache(int device) override {
    DeviceAllocator::for_device(device).empty_cache();  // synchronizes the device first
    PinnedPool::instance().release_unused();
  }
};

}  // namespace

const Stream& current_stream(int device) {
  auto it = scoped_streams.find(device);
  return it != scoped_streams.end() && it->second != nullptr ? *it->second : default_stream(device);
}

StreamScope::StreamScope(const Stream& stream) : device_(stream.device()) {
  auto it = scoped_streams.find(device_);
  previous_ = it != scoped_streams.end() ? it->second : nullptr;
  scoped_streams[device_] = &stream;
}

StreamScope::~StreamScope() {
  scoped_streams[device_] = previous_;
}

bool install_cuda_backend() {
  static const bool installed = [] {
    if (device_count() == 0) return false;
    static CudaDeviceBackend backend;
    register_device_backend(DeviceType::CUDA, &backend);
    register_cuda_elementwise_ops();
    register_cuda_nn_ops();
    return true;
  }();
  return installed;
}

}  // namespace mcd::kernels::cuda
