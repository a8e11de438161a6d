// The host memory an op keeps for its backward, measured on the host allocator.
#pragma once
#include <cstdint>
#include <functional>

#include <mcd/engine/allocator.h>
#include <mcd/engine/tensor.h>

namespace mcd::testing {

// Host bytes still allocated once `run` has returned its tensor, the tensor and its autograd
// graph alive: the output plus everything the backward would need.
inline std::int64_t live_bytes_after(const std::function<Tensor()>& run) {
  const std::int64_t before = host_memory_stats().allocated_bytes;
  const Tensor y = run();
  return host_memory_stats().allocated_bytes - before;
}

}  // namespace mcd::testing
