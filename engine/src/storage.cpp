// Host storage: 64-byte aligned blocks from the caching allocator (allocator.cpp).
#include <cstdlib>
#include <cstring>
#include <new>

#include <mcd/engine/allocator.h>
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
  MCD_CHECK(device.is_cpu(), "Storage: device {} is not available in this build", device.str());
  data_ = detail::host_allocate(nbytes);
}

Storage::~Storage() {
  detail::host_release(data_, nbytes_);
}

}  // namespace mcd
