// Helpers for the CPU/CUDA parity tests: device arrays filled from and read back into host
// vectors, NaN poisoning (every output element must be written), and the comparison used by
// every parity check. A failure names the worst element with both values.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

namespace mcd::testing {

// A device copy of a host vector, freed through the caching allocator.
template <class T>
class DeviceArray {
 public:
  DeviceArray(const std::vector<T>& host, const kernels::cuda::Stream& stream)
      : buffer_(stream.device(), host.size() * sizeof(T), stream.get()), size_(host.size()) {
    kernels::cuda::copy_host_to_device(buffer_.data(), host.data(), host.size() * sizeof(T),
                                       stream);
  }
  // n elements, every byte 0xFF: a NaN in float and double, so an unwritten output shows.
  DeviceArray(std::size_t n, const kernels::cuda::Stream& stream)
      : buffer_(stream.device(), n * sizeof(T), stream.get()), size_(n) {
    if (n > 0) MCD_CUDA_CHECK(cudaMemsetAsync(buffer_.data(), 0xFF, n * sizeof(T), stream.get()));
  }
  T* get() const { return buffer_.as<T>(); }
  std::size_t size() const { return size_; }
  std::vector<T> download(const kernels::cuda::Stream& stream) const {
    std::vector<T> host(size_);
    kernels::cuda::copy_device_to_host(host.data(), buffer_.data(), size_ * sizeof(T), stream);
    return host;
  }

 private:
  kernels::cuda::DeviceBuffer buffer_;
  std::size_t size_;
};

// Normwise relative error max_i |a_i - e_i| / max(max_i |e_i|, floor) must not exceed rtol
// (floor: the magnitude below which errors count as absolute, e.g. 1 for losses in nats,
// which may be near 0 for one row although their error is set by terms of order 1). A NaN
// where a non-NaN value is expected fails, and vice versa: NaN poisoning is caught.
template <class T>
void require_close(const std::string& what, const std::vector<T>& actual,
                   const std::vector<T>& expected, double rtol, double floor = 0.0) {
  REQUIRE(actual.size() == expected.size());
  double scale = 0.0;
  for (T e : expected)
    if (std::isfinite(static_cast<double>(e))) scale = std::max(scale, std::abs(double(e)));
  scale = std::max(scale, floor);
  if (scale == 0.0) scale = 1.0;
  double worst = 0.0;
  std::size_t worst_i = 0;
  bool nan_mismatch = false;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = static_cast<double>(actual[i]), e = static_cast<double>(expected[i]);
    if (std::isnan(a) != std::isnan(e) || (std::isinf(e) && a != e)) {
      nan_mismatch = true;
      worst_i = i;
      break;
    }
    if (std::isnan(e) || std::isinf(e)) continue;
    const double err = std::abs(a - e) / scale;
    if (err > worst) {
      worst = err;
      worst_i = i;
    }
  }
  INFO(what << ": worst element " << worst_i << " of " << actual.size() << ": cuda "
            << (actual.empty() ? 0.0 : static_cast<double>(actual[worst_i])) << " vs cpu "
            << (expected.empty() ? 0.0 : static_cast<double>(expected[worst_i]))
            << ", normwise relative error " << worst << " (tolerance " << rtol << ")");
  REQUIRE_FALSE(nan_mismatch);
  REQUIRE(worst <= rtol);
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// The parity tolerance of the issue: 1e-5 in float32, 1e-12 in float64.
template <class T>
constexpr double parity_rtol() {
  return sizeof(T) == 4 ? 1e-5 : 1e-12;
}

}  // namespace mcd::testing
