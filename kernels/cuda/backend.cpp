// The CUDA DeviceBackend and the per-thread current stream (backend.h).
#include <mcd/kernels/cuda/backend.h>

#include <map>
#include <memory>
#include <mutex>

#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>

namespace mcd::kernels::cuda {
namespace {

// Per-device default streams, created on first use and never destroyed: storages may be freed
// during static destruction.
const Stream& default_stream(int device) {
  static std::mutex mutex;
  static auto* streams = new std::map<int, std::unique_ptr<Stream>>();
  std::lock_guard<std::mutex> lock(mutex);
  auto& s = (*streams)[device];
  if (!s) s = std::make_unique<Stream>(device);
  return *s;
}

// The innermost StreamScope's stream per device, in this thread.
thread_local std::map<int, const Stream*> scoped_streams;

class CudaDeviceBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "CUDA"; }
  int device_count() const override { return cuda::device_count(); }
  void* allocate(std::size_t nbytes, int device) override {
    return DeviceAllocator::for_device(device).allocate(nbytes, current_stream(device).get());
  }
  void deallocate(void* ptr, std::size_t, int device) override {
    DeviceAllocator::for_device(device).free(ptr);
  }
  void copy(void* dst, Device dst_device, const void* src, Device src_device,
            std::size_t nbytes) override {
    if (dst_device.is_cpu()) {
      copy_device_to_host(dst, src, nbytes, current_stream(src_device.index));
    } else if (src_device.is_cpu()) {
      copy_host_to_device(dst, src, nbytes, current_stream(dst_device.index));
    } else {
      // Between devices: queued after the source's pending work, then waited for.
      const Stream& s = current_stream(src_device.index);
      DeviceGuard guard(src_device.index);
      MCD_CUDA_CHECK(
          cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, nbytes, s.get()));
      s.synchronize();
    }
  }
  void synchronize(int device) override {
    DeviceGuard guard(device);
    MCD_CUDA_CHECK(cudaDeviceSynchronize());
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
