// Storage: a reference-counted, 64-byte aligned byte buffer on one device. Views share it.
#pragma once
#include <cstddef>
#include <memory>

#include <mcd/engine/dtype.h>

namespace mcd {

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
};

}  // namespace mcd
