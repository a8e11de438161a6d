// Storage: host memory as 64-byte aligned blocks from the caching allocator (allocator.cpp);
// device memory from the device's registered backend (device_backend.h).
#include <cstdlib>
#include <cstring>
#include <new>

#include <mcd/engine/allocator.h>
#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>
#include <mcd/engine/storage.h>

namespace mcd {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32:
      return "float32";
    case DType::Float64:
      return "float64";
    case DType::Int64:
      return "int64";
  }
  return "?";
}

std::string Device::str() const {
  return type == DeviceType::CPU ? std::string("cpu") : fmt::format("cuda:{}", index);
}

Storage::Storage(std::size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    data_ = detail::host_allocate(nbytes);
    return;
  }
  backend_ = &require_device_backend(device, "Storage");
  // Zero-byte tensors still get a distinct, never-dereferenced allocation of one byte, so that
  // every storage owns a pointer of its own as on the host.
  data_ = backend_->allocate(nbytes > 0 ? nbytes : 1, device.index);
}

Storage::~Storage() {
  if (backend_ == nullptr)
    detail::host_release(data_, nbytes_);
  else
    backend_->deallocate(data_, nbytes_ > 0 ? nbytes_ : 1, device_.index);
}

}  // namespace mcd
