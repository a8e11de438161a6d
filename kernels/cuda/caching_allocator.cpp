// The CUDA side of the caching allocator: raw memory from cudaMalloc, events from a small
// recycled pool (creating an event per cross-stream free would cost a driver call each).
#include <mcd/kernels/cuda/caching_allocator.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

namespace mcd::kernels::cuda {

// Called by BlockCache with its own mutex held, so the event pool needs no lock of its own.
struct DeviceAllocator::Backend final : BlockCacheBackend {
  explicit Backend(int d) : device(d) {}

  void* allocate(std::size_t nbytes) override {
    DeviceGuard guard(device);
    void* p = nullptr;
    const cudaError_t s = cudaMalloc(&p, nbytes);
    if (s == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it: the cache frees memory and retries
      return nullptr;
    }
    MCD_CUDA_CHECK(s);
    return p;
  }
  void release(void* ptr, std::size_t) override {
    DeviceGuard guard(device);
    MCD_CUDA_CHECK(cudaFree(ptr));
  }
  EventId record_event(StreamId stream) override {
    DeviceGuard guard(device);
    cudaEvent_t e = nullptr;
    if (!free_events.empty()) {
      e = free_events.back();
      free_events.pop_back();
    } else {
      MCD_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    MCD_CUDA_CHECK(cudaEventRecord(e, reinterpret_cast<cudaStream_t>(stream)));
    const EventId id = ++last_id;
    events.emplace(id, e);
    return id;
  }
  bool event_done(EventId id) override {
    const cudaError_t s = cudaEventQuery(events.at(id));
    if (s == cudaErrorNotReady) {
      (void)cudaGetLastError();
      return false;
    }
    MCD_CUDA_CHECK(s);
    return true;
  }
  void release_event(EventId id) override {
    auto it = events.find(id);
    free_events.push_back(it->second);
    events.erase(it);
  }
  void synchronize() override {
    DeviceGuard guard(device);
    MCD_CUDA_CHECK(cudaDeviceSynchronize());
  }
  // All bits set: a NaN in float32 and float64, -1 in the integer types.
  void poison(void* ptr, std::size_t nbytes, StreamId stream) override {
    DeviceGuard guard(device);
    MCD_CUDA_CHECK(cudaMemsetAsync(ptr, 0xFF, nbytes, reinterpret_cast<cudaStream_t>(stream)));
  }

  int device;
  EventId last_id = 0;
  std::unordered_map<EventId, cudaEvent_t> events;
  std::vector<cudaEvent_t> free_events;
};

DeviceAllocator& DeviceAllocator::for_device(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, DeviceAllocator*> allocators;  // leaked on purpose
  std::lock_guard lock(mutex);
  auto it = allocators.find(device);
  if (it == allocators.end()) {
    check_device(device);
    it = allocators.emplace(device, new DeviceAllocator(device)).first;
  }
  return *it->second;
}

DeviceAllocator::DeviceAllocator(int device)
    : device_(device), backend_(new Backend(device)), cache_(new BlockCache(*backend_)) {
  // MCD_POISON_ALLOCATIONS=1: every block handed out reads NaN until written
  // (BlockCache::set_poison_allocations).
  const char* poison = std::getenv("MCD_POISON_ALLOCATIONS");
  if (poison != nullptr && std::string(poison) == "1") cache_->set_poison_allocations(true);
}

void* DeviceAllocator::allocate(std::size_t nbytes, cudaStream_t stream) {
  return cache_->allocate(nbytes, reinterpret_cast<StreamId>(stream));
}

void DeviceAllocator::free(void* ptr) {
  cache_->free(ptr);
}

void DeviceAllocator::record_stream(void* ptr, cudaStream_t stream) {
  cache_->record_stream(ptr, reinterpret_cast<StreamId>(stream));
}

void DeviceAllocator::set_poison_allocations(bool on) {
  cache_->set_poison_allocations(on);
}

void DeviceAllocator::empty_cache() {
  cache_->empty_cache();
}

void DeviceAllocator::begin_private_pool(PoolId pool) {
  cache_->begin_private_pool(pool);
}

void DeviceAllocator::end_private_pool() {
  cache_->end_private_pool();
}

void DeviceAllocator::release_private_pool(PoolId pool) {
  cache_->release_private_pool(pool);
}

BlockCacheStats DeviceAllocator::stats() const {
  return cache_->stats();
}

void DeviceAllocator::reset_peak() {
  cache_->reset_peak();
}

// ---- DeviceBuffer

DeviceBuffer::DeviceBuffer(int device, std::size_t nbytes, cudaStream_t stream)
    : data_(DeviceAllocator::for_device(device).allocate(nbytes, stream)),
      size_(nbytes),
      device_(device) {}

DeviceBuffer::~DeviceBuffer() {
  if (data_ == nullptr) return;
  try {
    DeviceAllocator::for_device(device_).free(data_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mcd: freeing a device buffer failed: %s\n", e.what());
  }
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      device_(other.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(size_, other.size_);
  std::swap(device_, other.device_);
  return *this;
}

}  // namespace mcd::kernels::cuda
