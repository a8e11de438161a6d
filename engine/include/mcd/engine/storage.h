// Storage: a reference-counted byte buffer on one device (64-byte aligned on the host, from
// the device's backend elsewhere). Views share it. On a device, data() is a device pointer:
// only that device's kernels and the backend's copies may use it.
#pragma once
#include <cstddef>
#include <memory>

#include <mcd/engine/dtype.h>

namespace mcd {

class DeviceBackend;

class Storage {
 public:
  Storage(std::size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  DeviceBackend* backend_ = nullptr;  // null on the host
};

}  // namespace mcd
