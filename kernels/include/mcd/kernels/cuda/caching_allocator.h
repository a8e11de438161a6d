// The device caching allocator: BlockCache's policy over cudaMalloc/cudaFree, one cache per
// device, keyed by the stream a block is allocated on. In a steady training loop no cudaMalloc
// (which synchronises the device) happens after the first step.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include <mcd/engine/block_cache.h>

namespace mcd::kernels::cuda {

class DeviceAllocator {
 public:
  // The allocator of `device`, created on first use and never destroyed: blocks may be freed
  // during static destruction, after the CUDA runtime may already be gone.
  static DeviceAllocator& for_device(int device);

  // nbytes on this device for use on `stream` (nullptr for 0 bytes); throws on out of memory.
  void* allocate(std::size_t nbytes, cudaStream_t stream);
  void free(void* ptr);
  // The block is also used by `stream`: its memory is not reused until that stream has run
  // the work queued on it before the free.
  void record_stream(void* ptr, cudaStream_t stream);
  // Synchronizes the device and returns every unused segment to the driver.
  void empty_cache();
  // Every block handed out is first filled with all bits set on the allocating stream (NaN in
  // floating point; BlockCache::set_poison_allocations): a debugging aid, also turned on by
  // MCD_POISON_ALLOCATIONS=1.
  void set_poison_allocations(bool on);
  // Private pools for CUDA graphs (BlockCache): allocations between begin and end come from
  // `pool`, whose memory nothing else gets until release_private_pool.
  void begin_private_pool(PoolId pool);
  void end_private_pool();
  void release_private_pool(PoolId pool);
  BlockCacheStats stats() const;
  void reset_peak();
  int device() const { return device_; }

  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

 private:
  explicit DeviceAllocator(int device);
  struct Backend;
  int device_;
  Backend* backend_;  // owned, never deleted (see for_device)
  BlockCache* cache_;
};

// A device buffer from the caching allocator, freed (stream-ordered) when it goes out of scope.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(int device, std::size_t nbytes, cudaStream_t stream);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  int device_ = 0;
};

}  // namespace mcd::kernels::cuda
