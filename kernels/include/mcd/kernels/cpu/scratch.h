// Per-thread scratch memory for kernels (im2col columns, partial sums). Blocks return to the
// calling thread's pool when the handle dies and are reused by the next call, so kernels
// that run every step neither call malloc nor fault pages in once warmed up.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mcd::kernels::cpu {

namespace detail {
void* scratch_acquire(std::size_t nbytes, std::size_t& capacity);
void scratch_release(void* p, std::size_t capacity);
}  // namespace detail

template <class T>
class Scratch {
 public:
  explicit Scratch(std::int64_t n)
      : data_(static_cast<T*>(detail::scratch_acquire(
            sizeof(T) * static_cast<std::size_t>(n > 0 ? n : 1), capacity_))) {}
  ~Scratch() { detail::scratch_release(data_, capacity_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }
  T& operator[](std::int64_t i) const { return data_[i]; }

 private:
  std::size_t capacity_ = 0;
  T* data_;
};

}  // namespace mcd::kernels::cpu
