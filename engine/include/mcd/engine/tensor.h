// Tensor: a strided view (shape, strides, offset) of shared Storage, plus autograd state.
// Tensor is a cheap handle; copies alias. Views (reshape, permute, slice, expand) share
// storage and are differentiable. In-place methods ending in '_' bypass autograd and are
// meant for optimizers, running statistics and initialisation.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/dtype.h>
#include <mcd/engine/error.h>
#include <mcd/engine/shape.h>
#include <mcd/engine/storage.h>

namespace mcd {

class Generator;
struct Node;
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  std::int64_t offset = 0;
  DType dtype = DType::Float32;
  // Reverse mode: a leaf that requires grad accumulates into `grad`; a non-leaf has grad_fn.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
  // Forward mode: the tangent carried by this value while a jvp is being evaluated.
  std::shared_ptr<TensorImpl> tangent;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = {});
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = {});
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = {});
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = {});
  static Tensor scalar(double value, DType dtype = DType::Float32);
  static Tensor arange(std::int64_t n, DType dtype = DType::Int64);
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::Float32);
  static Tensor uniform(const Shape& shape, Generator& gen, double lo, double hi,
                        DType dtype = DType::Float32);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  static Tensor from_doubles(const std::vector<double>& values, const Shape& shape,
                             DType dtype = DType::Float32);

  // ---- metadata
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  std::int64_t dim() const { return static_cast<std::int64_t>(impl().shape.size()); }
  std::int64_t size(std::int64_t d) const;
  std::int64_t numel() const { return shape_numel(impl().shape); }
  std::int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  bool shares_storage_with(const Tensor& other) const;
  std::string str() const;  // shape, dtype, device and (for small tensors) values

  // ---- element access. data<T>() checks the dtype and points at element 0: host memory for a
  // CPU tensor, device memory (for that device's kernels) otherwise. item() and to_doubles()
  // copy a device tensor to the host first.
  template <class T>
  T* data();
  template <class T>
  const T* data() const;
  void* raw_data();
  const void* raw_data() const;
  double item() const;                     // the single element, as double
  std::vector<double> to_doubles() const;  // every element in row-major order

  // ---- differentiable views and conversions
  Tensor reshape(const Shape& shape) const;
  Tensor permute(const std::vector<std::int64_t>& dims) const;
  Tensor transpose(std::int64_t d0, std::int64_t d1) const;
  Tensor slice(std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) const;
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(std::int64_t dim) const;
  Tensor squeeze(std::int64_t dim) const;
  Tensor flatten(std::int64_t start_dim = 0, std::int64_t end_dim = -1) const;
  Tensor contiguous() const;
  Tensor to(DType dtype) const;
  // A copy on `device` (this tensor itself when already there), differentiable: gradients
  // and tangents move back and forth with the values. Needs the device's backend.
  Tensor to(Device device) const;
  Tensor clone() const;
  Tensor detach() const;  // shares storage, no autograd history and no tangent

  // ---- reverse-mode autograd
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool value);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g);
  void zero_grad() { impl().grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  void backward(const Tensor& grad_output = Tensor()) const;

  // ---- forward-mode autograd: the tangent this value carries (undefined if none)
  Tensor tangent() const { return Tensor(impl().tangent); }
  void set_tangent(const Tensor& t);

  // ---- in-place, no autograd
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // this += alpha * other
  Tensor& mul_(double value);

  TensorImpl& impl() const {
    MCD_CHECK(impl_ != nullptr, "use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Throws "op: expected <what>, got shape [...]"-style messages.
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_floating(const char* op, const Tensor& t);
void check_defined(const char* op, const Tensor& t);

}  // namespace mcd
