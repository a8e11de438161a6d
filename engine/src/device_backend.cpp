// The registry of device backends: one slot per non-CPU device type.
#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>

namespace mcd {
namespace {
DeviceBackend* cuda_backend = nullptr;
}  // namespace

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

}  // namespace mcd
