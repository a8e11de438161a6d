// Element types and devices. A Tensor's storage is raw bytes; DType says how to read them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace mcd {

enum class DType : std::uint8_t { Float32, Float64, Int64 };

constexpr std::size_t dtype_size(DType t) {
  return t == DType::Float32 ? 4 : 8;
}
const char* dtype_name(DType t);  // "float32", "float64", "int64"
inline bool is_floating(DType t) {
  return t != DType::Int64;
}

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::Float32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::Float64;
}
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::Int64;
}

enum class DeviceType : std::uint8_t { CPU, CUDA };

// A device index is carried everywhere so that several GPUs need no API change.
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  std::string str() const;
  friend bool operator==(const Device&, const Device&) = default;
};

}  // namespace mcd
