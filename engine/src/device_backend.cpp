// The registry of device backends: one slot per non-CPU device type.
#include <mcd/engine/device_backend.h>

#include <vector>

#include <mcd/engine/error.h>

namespace mcd {
namespace {

DeviceBackend* cuda_backend = nullptr;

// A copy that was complete when it was made.
class CopiedToHost final : public DeviceBackend::PendingHostCopy {
 public:
  explicit CopiedToHost(std::size_t nbytes) : bytes_(nbytes) {}
  bool done() const override { return true; }
  void wait() override {}
  const void* data() const override { return bytes_.data(); }
  void* mutable_data() { return bytes_.data(); }

 private:
  std::vector<unsigned char> bytes_;
};

}  // namespace

std::unique_ptr<DeviceBackend::PendingHostCopy> DeviceBackend::start_copy_to_host(
    const void* src, Device device, std::size_t nbytes) {
  auto out = std::make_unique<CopiedToHost>(nbytes);
  if (nbytes > 0) copy(out->mutable_data(), Device::cpu(), src, device, nbytes);
  return out;
}

void register_device_backend(DeviceType type, DeviceBackend* backend) {
  MCD_CHECK(type != DeviceType::CPU, "register_device_backend: the CPU needs no backend");
  cuda_backend = backend;
}

DeviceBackend* device_backend(DeviceType type) {
  return type == DeviceType::CUDA ? cuda_backend : nullptr;
}

DeviceBackend& require_device_backend(Device device, const char* op) {
  DeviceBackend* b = device_backend(device.type);
  MCD_CHECK(b != nullptr,
            "{}: device {} is not available: no CUDA backend is installed in this program (built "
            "without CUDA, or the CUDA library was not initialised)",
            op, device.str());
  const int count = b->device_count();
  MCD_CHECK(device.index >= 0 && device.index < count,
            "{}: device {} does not exist ({} backend: {} device(s))", op, device.str(), b->name(),
            count);
  return *b;
}

BlockCacheStats device_memory_stats(Device device) {
  return require_device_backend(device, "device_memory_stats").memory_stats(device.index);
}

void reset_peak_device_memory(Device device) {
  require_device_backend(device, "reset_peak_device_memory").reset_peak_memory(device.index);
}

void empty_device_cache(Device device) {
  require_device_backend(device, "empty_device_cache").empty_cache(device.index);
}

}  // namespace mcd
