// Device runtime: device count and selection, RAII streams, events and pinned host buffers,
// and host<->device copies staged through pinned memory. Every object remembers its device
// index and makes that device current while it works, so code that drives several GPUs from
// one thread never depends on whichever device happened to be current.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace mcd::kernels::cuda {

// Number of usable devices; 0 (never an exception) when there is no device or no driver.
int device_count();
// Throws unless 0 <= device < device_count(), naming the device and the count.
void check_device(int device);
void set_device(int device);
int current_device();
std::string device_name(int device);
// Bytes of shared memory one block may use after opting in (227 KiB on H100).
std::size_t max_shared_memory_per_block(int device);
int multiprocessor_count(int device);

// Makes `device` current for the guard's lifetime and restores the previous one, unless the
// previous one has no context yet (restoring would create it: see the destructor).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_;
  bool changed_;
};

// A non-blocking stream (no implicit synchronisation with the legacy default stream).
class Stream {
 public:
  explicit Stream(int device);
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  void synchronize() const;
  // Later work on this stream waits for `event` (recorded on any stream of the same device).
  void wait(cudaEvent_t event) const;
  // Whether the stream is capturing a CUDA graph (graph.h): work queued now is recorded, not run.
  bool capturing() const;

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
};

// One stream per device, each created on first use and never destroyed (storages may be freed
// during static destruction, and the caching allocator keys blocks by stream: a destroyed
// stream's handle could come back for another). Make instances static and never destroy them.
class StreamPerDevice {
 public:
  StreamPerDevice();
  const Stream& get(int device);

 private:
  struct State;
  State* state_;  // never freed, like the streams
};

class Event {
 public:
  // Timing events cost more to record; synchronisation-only events are the default.
  explicit Event(int device, bool timing = false);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  int device() const { return device_; }
  void record(cudaStream_t stream) const;
  void synchronize() const;
  bool done() const;  // true once the recorded work has run
  // Milliseconds between two recorded timing events (start, then this).
  float elapsed_ms_since(const Event& start) const;

 private:
  cudaEvent_t event_ = nullptr;
  int device_ = 0;
};

// Page-locked host memory: the only host memory copies can overlap with kernels from.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t nbytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// Copies between ordinary (pageable) host memory and device memory on `stream`, in chunks
// through two pinned staging buffers so that the host memcpy of one chunk overlaps the DMA of
// the other. Both return once the copy is complete (`dst` is then safe to read or `src` to
// reuse); work queued earlier on `stream` runs first.
void copy_host_to_device(void* dst, const void* src, std::size_t nbytes, const Stream& stream);
void copy_device_to_host(void* dst, const void* src, std::size_t nbytes, const Stream& stream);

}  // namespace mcd::kernels::cuda
