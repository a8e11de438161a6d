// Host storage: 64-byte aligned so vector kernels never straddle cache lines at element 0.
#include <cstdlib>
#include <cstring>
#include <new>

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
  const std::size_t rounded = ((nbytes + 63) / 64) * 64;
  data_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (data_ == nullptr) throw std::bad_alloc();
}

Storage::~Storage() {
  std::free(data_);
}

}  // namespace mcd
