// The interface a device backend (CUDA) gives the engine: device memory, copies between the
// host and devices, and synchronisation. The engine itself holds no CUDA headers and builds
// everywhere; a backend registers itself once at start-up (the CUDA library's install
// function), and the tests register a fake device to check the engine's side on the CPU.
//
// Storage on a device allocates and frees through the registered backend; Tensor::to(Device)
// copies through it. Ops without a kernel for a device fail with a message naming the op and
// the device (dispatch.h), never by touching device memory from the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include <mcd/engine/block_cache.h>
#include <mcd/engine/dtype.h>

namespace mcd {

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual const char* name() const = 0;
  virtual int device_count() const = 0;
  // nbytes > 0; the memory must stay valid until deallocate, which gets the same arguments.
  virtual void* allocate(std::size_t nbytes, int device) = 0;
  virtual void deallocate(void* ptr, std::size_t nbytes, int device) = 0;
  // Copies nbytes from src to dst; either side may be the host (Device::cpu()). Returns when
  // dst may be read by the host (device to host) or src may be reused (host to device).
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device,
                    std::size_t nbytes) = 0;
  virtual void synchronize(int device) = 0;

  // ---- copies that let the host run ahead of the device (engine/transfer.h). Both use the
  // current stream of `device`; the defaults copy at once through copy().
  // A device-to-host copy on its way: done() says whether it has arrived, wait() blocks until
  // it has; then data() holds the bytes, valid for the object's lifetime.
  class PendingHostCopy {
   public:
    virtual ~PendingHostCopy() = default;
    virtual bool done() const = 0;
    virtual void wait() = 0;
    virtual const void* data() const = 0;
  };
  // Queues a copy of nbytes of device memory at src to the host, after the work queued so far,
  // and returns without waiting for it.
  virtual std::unique_ptr<PendingHostCopy> start_copy_to_host(const void* src, Device device,
                                                              std::size_t nbytes);
  // Host to device without waiting for the device: returns once src may be reused; work queued
  // later on the stream sees dst written. Refused while the stream captures a graph (a replay
  // would copy from memory that has been reused by then).
  virtual void copy_to_device_async(void* dst, Device device, const void* src, std::size_t nbytes) {
    copy(dst, device, src, Device::cpu(), nbytes);
  }

  // ---- streams (engine/stream.h). A stream is an ordered queue of device work, named by an
  // opaque handle; allocations, copies and ops use the calling thread's current stream. These
  // defaults describe a backend without streams, whose work runs in issue order (which
  // satisfies every ordering below): one stream, handle 0.
  // A stream of `device` for the caller's use until release_stream. Streams are pooled, never
  // destroyed: memory cached for a stream stays safe to reuse on it.
  virtual std::uintptr_t acquire_stream(int device) { return 0; }
  virtual void release_stream(int device, std::uintptr_t stream) {}
  // The calling thread's current stream on `device`.
  virtual std::uintptr_t current_stream(int device) { return 0; }
  // Makes `stream` (from acquire_stream or current_stream) current on `device` in this thread.
  virtual void set_current_stream(int device, std::uintptr_t stream) {}
  // Work queued on `waiter` from now on runs after the work queued on `producer` so far.
  virtual void stream_wait(int device, std::uintptr_t waiter, std::uintptr_t producer) {}

  // ---- graphs (engine/graph.h): the work queued on a stream by a piece of host code, captured
  // once and replayed. These defaults describe a backend without graphs.
  // Runs `record` while capturing `stream` and returns a non-zero graph handle, or 0 without
  // running `record` when the backend has no graphs. Throws when the capture fails.
  // `share_memory_with` (a graph handle, or 0): the new graph's memory comes from that graph's
  // pool (graph.h says when that is safe).
  virtual std::uintptr_t capture_graph(int device, std::uintptr_t stream,
                                       const std::function<void()>& record,
                                       std::uintptr_t share_memory_with) {
    return 0;
  }
  virtual void replay_graph(int device, std::uintptr_t graph, std::uintptr_t stream) {}
  // Waits for the graph's replays, then frees it and the memory it kept.
  virtual void destroy_graph(int device, std::uintptr_t graph) {}

  // ---- memory accounting (device_memory_stats below). These defaults describe a backend
  // without a cache: nothing to report, nothing to give back.
  virtual BlockCacheStats memory_stats(int device) { return {}; }
  virtual void reset_peak_memory(int device) {}
  virtual void empty_cache(int device) {}
};

// Registers `backend` for `type` (nullptr unregisters). The backend must outlive every
// storage it allocated. Not thread-safe: register before tensors exist on that device type.
void register_device_backend(DeviceType type, DeviceBackend* backend);
// The backend for `type`, or nullptr when none is registered.
DeviceBackend* device_backend(DeviceType type);
// The backend serving `device`, checking the index; throws naming `op` when there is none
// ("built without CUDA", "no CUDA device present") or the index is out of range.
DeviceBackend& require_device_backend(Device device, const char* op);

// Memory of `device` as its backend's caching allocator counts it: bytes held by live tensors
// (allocated) and from the driver (reserved: allocated, cached for reuse, and kept by captured
// graphs), with their high-water marks since the last reset. For the host, host_memory_stats.
BlockCacheStats device_memory_stats(Device device);
void reset_peak_device_memory(Device device);
// Waits for the device and gives its cached, unused memory back to the driver (and unused
// page-locked host blocks to the system), for other programs or a larger allocation; the next
// steps allocate afresh.
void empty_device_cache(Device device);

}  // namespace mcd
