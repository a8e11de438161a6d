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
};

// Registers `backend` for `type` (nullptr unregisters). The backend must outlive every
// storage it allocated. Not thread-safe: register before tensors exist on that device type.
void register_device_backend(DeviceType type, DeviceBackend* backend);
// The backend for `type`, or nullptr when none is registered.
DeviceBackend* device_backend(DeviceType type);
// The backend serving `device`, checking the index; throws naming `op` when there is none
// ("built without CUDA", "no CUDA device present") or the index is out of range.
DeviceBackend& require_device_backend(Device device, const char* op);

}  // namespace mcd
