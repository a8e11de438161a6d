// Op kernels for devices. A backend library (CUDA) registers, per op family, one table of
// kernels: a class with virtual methods declared in engine/device_ops/<family>.h, working on
// Tensors whose storage is on the device. An engine op looks its family's table up when its
// inputs are not on the CPU, then records the same autograd rules as on the CPU, so reverse
// and forward mode work on any device whose tables cover the ops the rules use.
// Families are independent tables so that each grows on its own.
#pragma once
#include <mcd/engine/error.h>
#include <mcd/engine/tensor.h>

namespace mcd {

template <class Table>
struct DeviceOpsSlot {
  static inline Table* cuda = nullptr;
};

// Registers `table` for `type` (nullptr unregisters). The table must outlive its use.
template <class Table>
void register_device_ops(DeviceType type, Table* table) {
  MCD_CHECK(type == DeviceType::CUDA, "register_device_ops: only CUDA tables exist");
  DeviceOpsSlot<Table>::cuda = table;
}

// The table serving tensor `t`'s device; throws naming `op`, the device and the shape when
// there is none (a build without the backend, or a family the backend does not cover yet).
template <class Table>
Table& require_device_ops(const char* op, const Tensor& t) {
  Table* table = t.device().type == DeviceType::CUDA ? DeviceOpsSlot<Table>::cuda : nullptr;
  MCD_CHECK(table != nullptr, "{}: no kernel for device {} in this build (tensor of shape {})", op,
            t.device().str(), shape_str(t.shape()));
  return *table;
}

// Inputs of one op must share a device: throws naming the op and both devices otherwise.
inline void check_same_device(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (!t->defined()) continue;
    if (first == nullptr) {
      first = t;
      continue;
    }
    MCD_CHECK(t->device() == first->device(),
              "{}: expected every tensor on one device, got {} (shape {}) and {} (shape {})", op,
              first->device().str(), shape_str(first->shape()), t->device().str(),
              shape_str(t->shape()));
  }
}

}  // namespace mcd
