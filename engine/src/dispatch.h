// The one place where ops choose a backend and an element type. Today only the CPU
// backend exists; a tensor on another device gets a clear error naming the op.
#pragma once
#include <initializer_list>

#include <mcd/engine/device_ops.h>
#include <mcd/engine/tensor.h>

namespace mcd::detail {

inline void require_cpu(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t->defined() && !t->device().is_cpu())
      fail("{}: no kernel for device {} in this build (tensor of shape {})", op, t->device().str(),
           shape_str(t->shape()));
}

// True when t is defined and lives on a device: the op then runs its device table's kernel.
inline bool on_device(const Tensor& t) {
  return t.defined() && !t.device().is_cpu();
}

// The table of family `Table` registered for `device`, or nullptr (the host, or a build or
// backend without one); for callers that have a host fallback.
template <class Table>
Table* find_device_ops(Device device) {
  return device.type == DeviceType::CUDA ? DeviceOpsSlot<Table>::cuda : nullptr;
}

// Views without autograd, used by op implementations and rules.
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, std::int64_t offset);
Tensor expand_view(const Tensor& t, const Shape& shape);
Tensor permute_view(const Tensor& t, const std::vector<std::int64_t>& dims);
// Contiguous copy without autograd (returns t itself when already contiguous).
Tensor contiguous_data(const Tensor& t);

// Element pointer of an optional tensor: nullptr when it is undefined.
template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* data_or_null(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace mcd::detail

// Runs the body with scalar_t bound to the C++ type of a floating dtype.
#define MCD_DISPATCH_FLOATING(dtype, op, ...)                             \
  switch (dtype) {                                                        \
    case ::mcd::DType::Float32: {                                         \
      using scalar_t = float;                                             \
      __VA_ARGS__;                                                        \
      break;                                                              \
    }                                                                     \
    case ::mcd::DType::Float64: {                                         \
      using scalar_t = double;                                            \
      __VA_ARGS__;                                                        \
      break;                                                              \
    }                                                                     \
    default:                                                              \
      ::mcd::fail("{}: expected a float32 or float64 tensor, got {}", op, \
                  ::mcd::dtype_name(dtype));                              \
  }
