// Device runtime objects. Destructors cannot throw: they report a failed release on stderr,
// except at process exit when the CUDA runtime is already unloading (nothing is left to free).
#include <mcd/kernels/cuda/runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include <cuda.h>
#include <cudaTypedefs.h>

#include <fmt/format.h>

#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/check.h>

namespace mcd::kernels::cuda {

void throw_error(const std::string& message) {
  throw Error(message);
}

void throw_call_error(const char* call, const char* file, int line, const std::string& what) {
  throw Error(fmt::format("{} failed at {}:{}: {}", call, file, line, what));
}

namespace {

void warn_status(cudaError_t status, const char* call) {
  if (status == cudaSuccess || status == cudaErrorCudartUnloading) return;
  std::fprintf(stderr, "mcd: %s failed in a destructor: %s\n", call, cudaGetErrorName(status));
}

constexpr std::size_t kStageBytes = std::size_t{4} << 20;

// Two pinned halves and their events, per host thread and device: a chunk is copied into one
// half while the DMA of the previous chunk reads the other.
struct Staging {
  explicit Staging(int device) : events{Event(device), Event(device)} {
    buffers[0] = PinnedBuffer(kStageBytes);
    buffers[1] = PinnedBuffer(kStageBytes);
  }
  PinnedBuffer buffers[2];
  Event events[2];
};

Staging& staging_for(int device) {
  thread_local std::map<int, Staging> staging;
  auto it = staging.find(device);
  if (it == staging.end()) it = staging.emplace(device, Staging(device)).first;
  return it->second;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: clear the sticky status
    return 0;
  }
  return n;
}

void check_device(int device) {
  // The count cannot change while the process runs: asked once (the guards below switch devices
  // often), unless there was none, which a later call reports again.
  static std::atomic<int> known{0};
  int n = known.load(std::memory_order_relaxed);
  if (n == 0) known.store(n = device_count(), std::memory_order_relaxed);
  MCD_CHECK(device >= 0 && device < n, "CUDA device {} does not exist ({} device{} present)",
            device, n, n == 1 ? "" : "s");
}

void set_device(int device) {
  check_device(device);
  MCD_CUDA_CHECK(cudaSetDevice(device));
}

int current_device() {
  int d = 0;
  MCD_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

std::string device_name(int device) {
  check_device(device);
  cudaDeviceProp prop{};
  MCD_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

std::size_t max_shared_memory_per_block(int device) {
  int bytes = 0;
  MCD_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<std::size_t>(bytes);
}

int multiprocessor_count(int device) {
  int n = 0;
  MCD_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

namespace {

// Whether `device`'s primary context exists already; true when the driver cannot say. Asked
// through the driver's entry points, so that the library needs no link to the driver itself.
bool primary_context_active(int device) {
  struct Driver {
    PFN_cuDeviceGet_v2000 device_get = nullptr;
    PFN_cuDevicePrimaryCtxGetState_v7000 state = nullptr;
  };
  static const Driver driver = [] {
    Driver d;
    void* get = nullptr;
    void* state = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuDeviceGet", &get, 2000, cudaEnableDefault, &found) ==
            cudaSuccess &&
        found == cudaDriverEntryPointSuccess &&
        cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &state, 7000,
                                         cudaEnableDefault, &found) == cudaSuccess &&
        found == cudaDriverEntryPointSuccess) {
      d.device_get = reinterpret_cast<PFN_cuDeviceGet_v2000>(get);
      d.state = reinterpret_cast<PFN_cuDevicePrimaryCtxGetState_v7000>(state);
    }
    (void)cudaGetLastError();
    return d;
  }();
  if (driver.state == nullptr) return true;
  CUdevice handle = 0;
  unsigned int flags = 0;
  int active = 1;
  if (driver.device_get(&handle, device) != CUDA_SUCCESS) return true;
  if (driver.state(handle, &flags, &active) != CUDA_SUCCESS) return true;
  return active != 0;
}

}  // namespace

DeviceGuard::DeviceGuard(int device) : previous_(current_device()), changed_(device != previous_) {
  if (changed_) set_device(device);
}

DeviceGuard::~DeviceGuard() {
  // Making a device current creates its context (hundreds of MiB on the GPU) since CUDA 12. A
  // thread that never used its previous device (device 0 by default, in a process that trains
  // on device 1) stays on this one rather than waking device 0 up: every call here sets its
  // device, so nothing depends on which one is current.
  if (changed_ && primary_context_active(previous_))
    warn_status(cudaSetDevice(previous_), "cudaSetDevice");
}

// ---- Stream

struct StreamPerDevice::State {
  std::mutex mutex;
  std::map<int, std::unique_ptr<Stream>> streams;
};

StreamPerDevice::StreamPerDevice() : state_(new State()) {}

const Stream& StreamPerDevice::get(int device) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& s = state_->streams[device];
  if (!s) s = std::make_unique<Stream>(device);
  return *s;
}

Stream::Stream(int device) : device_(device) {
  DeviceGuard guard(device);
  MCD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_ != nullptr) warn_status(cudaStreamDestroy(stream_), "cudaStreamDestroy");
}

Stream::Stream(Stream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)), device_(other.device_) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  std::swap(stream_, other.stream_);
  std::swap(device_, other.device_);
  return *this;
}

void Stream::synchronize() const {
  MCD_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Stream::wait(cudaEvent_t event) const {
  MCD_CUDA_CHECK(cudaStreamWaitEvent(stream_, event, 0));
}

bool Stream::capturing() const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MCD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &status));
  return status != cudaStreamCaptureStatusNone;
}

// ---- Event

Event::Event(int device, bool timing) : device_(device) {
  DeviceGuard guard(device);
  MCD_CUDA_CHECK(
      cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}

Event::~Event() {
  if (event_ != nullptr) warn_status(cudaEventDestroy(event_), "cudaEventDestroy");
}

Event::Event(Event&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)), device_(other.device_) {}

Event& Event::operator=(Event&& other) noexcept {
  std::swap(event_, other.event_);
  std::swap(device_, other.device_);
  return *this;
}

void Event::record(cudaStream_t stream) const {
  MCD_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void Event::synchronize() const {
  MCD_CUDA_CHECK(cudaEventSynchronize(event_));
}

bool Event::done() const {
  const cudaError_t s = cudaEventQuery(event_);
  if (s == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error, but some runtimes leave it as the last error
    return false;
  }
  MCD_CUDA_CHECK(s);
  return true;
}

float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0.0f;
  MCD_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

// ---- PinnedBuffer

PinnedBuffer::PinnedBuffer(std::size_t nbytes) : size_(nbytes) {
  if (nbytes > 0) MCD_CUDA_CHECK(cudaHostAlloc(&data_, nbytes, cudaHostAllocPortable));
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ != nullptr) warn_status(cudaFreeHost(data_), "cudaFreeHost");
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(size_, other.size_);
  return *this;
}

// ---- staged copies

void copy_host_to_device(void* dst, const void* src, std::size_t nbytes, const Stream& stream) {
  if (nbytes == 0) return;
  DeviceGuard guard(stream.device());
  Staging& st = staging_for(stream.device());
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  for (std::size_t off = 0, chunk = 0; off < nbytes; off += kStageBytes, ++chunk) {
    const std::size_t n = std::min(kStageBytes, nbytes - off);
    const int half = static_cast<int>(chunk % 2);
    if (chunk >= 2) st.events[half].synchronize();  // the DMA that last read this half is done
    std::memcpy(st.buffers[half].data(), s + off, n);
    MCD_CUDA_CHECK(
        cudaMemcpyAsync(d + off, st.buffers[half].data(), n, cudaMemcpyHostToDevice, stream.get()));
    st.events[half].record(stream.get());
  }
  stream.synchronize();
}

void copy_device_to_host(void* dst, const void* src, std::size_t nbytes, const Stream& stream) {
  if (nbytes == 0) return;
  DeviceGuard guard(stream.device());
  Staging& st = staging_for(stream.device());
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  // Chunk i is queued before chunk i-1 is drained into `dst`, so the DMA and the memcpy overlap.
  auto drain = [&](std::size_t chunk) {
    const std::size_t off = chunk * kStageBytes;
    const int half = static_cast<int>(chunk % 2);
    st.events[half].synchronize();
    std::memcpy(d + off, st.buffers[half].data(), std::min(kStageBytes, nbytes - off));
  };
  std::size_t chunks = 0;
  for (std::size_t off = 0; off < nbytes; off += kStageBytes, ++chunks) {
    const std::size_t n = std::min(kStageBytes, nbytes - off);
    const int half = static_cast<int>(chunks % 2);
    MCD_CUDA_CHECK(
        cudaMemcpyAsync(st.buffers[half].data(), s + off, n, cudaMemcpyDeviceToHost, stream.get()));
    st.events[half].record(stream.get());
    if (chunks >= 1) drain(chunks - 1);
  }
  drain(chunks - 1);
}

}  // namespace mcd::kernels::cuda
