// Tensor handles: factories, metadata, element access, in-place updates and printing.
// Differentiable views live in views.cpp. In-place updates of device tensors run the device's
// elementwise kernels (device_ops/elementwise.h); copy_ also moves values between devices.
#include <algorithm>
#include <cstring>
#include <ostream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops/elementwise.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/tensor.h>
#include <mcd/kernels/cpu/elementwise.h>

#include "dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;

namespace {
// Runs fn(ptr) with ptr typed by dtype (float, double or int64).
template <class F>
void visit_dtype(DType dtype, void* p, F&& fn) {
  switch (dtype) {
    case DType::Float32:
      return fn(static_cast<float*>(p));
    case DType::Float64:
      return fn(static_cast<double*>(p));
    case DType::Int64:
      return fn(static_cast<std::int64_t*>(p));
  }
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape)
    MCD_CHECK(d >= 0, "Tensor::empty: negative dimension in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(
      static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  if (!device.is_cpu()) return full(shape, 0.0, dtype, device);
  Tensor t = empty(shape, dtype, device);
  std::memset(t.raw_data(), 0, static_cast<std::size_t>(t.numel()) * dtype_size(dtype));
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  // A device without kernels (a backend that only stores, such as the tests' fake device) is
  // filled on the host and copied; otherwise fill_ runs on the device.
  if (!device.is_cpu() && detail::find_device_ops<ElementwiseDeviceOps>(device) == nullptr)
    return full(shape, value, dtype).to(device);
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) {
  return full({}, value, dtype);
}

Tensor Tensor::arange(std::int64_t n, DType dtype) {
  Tensor t = empty({n}, dtype);
  visit_dtype(dtype, t.raw_data(), [&](auto* p) {
    for (std::int64_t i = 0; i < n; ++i)
      p[i] = static_cast<std::remove_pointer_t<decltype(p)>>(i);
  });
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype) {
  Tensor t = empty(shape, dtype);
  MCD_DISPATCH_FLOATING(dtype, "randn", {
    auto* p = t.data<scalar_t>();
    for (std::int64_t i = 0; i < t.numel(); ++i)
      p[i] = static_cast<scalar_t>(gen.normal());
  });
  return t;
}

Tensor Tensor::uniform(const Shape& shape, Generator& gen, double lo, double hi, DType dtype) {
  Tensor t = empty(shape, dtype);
  MCD_DISPATCH_FLOATING(dtype, "uniform", {
    auto* p = t.data<scalar_t>();
    for (std::int64_t i = 0; i < t.numel(); ++i)
      p[i] = static_cast<scalar_t>(lo + (hi - lo) * gen.uniform());
  });
  return t;
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  MCD_CHECK(static_cast<std::int64_t>(values.size()) == shape_numel(shape),
            "Tensor::from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>());
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}
template Tensor Tensor::from_vector<float>(const std::vector<float>&, const Shape&);
template Tensor Tensor::from_vector<double>(const std::vector<double>&, const Shape&);
template Tensor Tensor::from_vector<std::int64_t>(const std::vector<std::int64_t>&, const Shape&);

Tensor Tensor::from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype) {
  return from_vector(values, shape).to(dtype);
}

std::int64_t Tensor::size(std::int64_t d) const {
  return impl().shape[static_cast<std::size_t>(normalize_dim(d, dim(), "Tensor::size"))];
}

bool Tensor::is_contiguous() const {
  const auto& s = impl().shape;
  const auto& st = impl().strides;
  std::int64_t expected = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    if (s[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= s[i];
  }
  return true;
}

bool Tensor::shares_storage_with(const Tensor& other) const {
  return defined() && other.defined() && impl().storage == other.impl().storage;
}

template <class T>
T* Tensor::data() {
  MCD_CHECK(dtype() == dtype_of<T>(), "Tensor::data: tensor of shape {} is {}, not {}",
            shape_str(shape()), dtype_name(dtype()), dtype_name(dtype_of<T>()));
  return static_cast<T*>(impl().storage->data()) + impl().offset;
}
template <class T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}
template float* Tensor::data<float>();
template double* Tensor::data<double>();
template std::int64_t* Tensor::data<std::int64_t>();
template const float* Tensor::data<float>() const;
template const double* Tensor::data<double>() const;
template const std::int64_t* Tensor::data<std::int64_t>() const;

void* Tensor::raw_data() {
  return static_cast<char*>(impl().storage->data()) +
         impl().offset * static_cast<std::int64_t>(dtype_size(dtype()));
}
const void* Tensor::raw_data() const {
  return const_cast<Tensor*>(this)->raw_data();
}

double Tensor::item() const {
  MCD_CHECK(numel() == 1, "Tensor::item: expected one element, got shape {}", shape_str(shape()));
  return to_doubles()[0];
}

std::vector<double> Tensor::to_doubles() const {
  // A device tensor is read through a copy to the host, without autograd.
  if (!device().is_cpu()) return detach().to(Device::cpu()).to_doubles();
  Tensor d = to(DType::Float64).contiguous();
  const double* p = d.data<double>();
  return std::vector<double>(p, p + d.numel());
}

void Tensor::set_grad(const Tensor& g) {
  if (!g.defined()) {
    impl().grad.reset();
    return;
  }
  MCD_CHECK(g.shape() == shape() && g.dtype() == dtype(),
            "Tensor::set_grad: gradient of shape {} ({}) for a tensor of shape {} ({})",
            shape_str(g.shape()), dtype_name(g.dtype()), shape_str(shape()), dtype_name(dtype()));
  MCD_CHECK(g.device() == device(), "Tensor::set_grad: gradient on {} for a tensor on {}",
            g.device().str(), device().str());
  impl().grad = g.impl_ptr();
}

Tensor& Tensor::set_requires_grad(bool value) {
  MCD_CHECK(!value || is_floating(dtype()),
            "Tensor::set_requires_grad: only floating tensors can require grad, got {}",
            dtype_name(dtype()));
  MCD_CHECK(is_leaf(), "Tensor::set_requires_grad: only leaf tensors can be changed");
  impl().requires_grad = value;
  return *this;
}

void Tensor::set_tangent(const Tensor& t) {
  if (!t.defined()) {
    impl().tangent.reset();
    return;
  }
  MCD_CHECK(t.shape() == shape() && t.dtype() == dtype(),
            "Tensor::set_tangent: tangent of shape {} ({}) for a primal of shape {} ({})",
            shape_str(t.shape()), dtype_name(t.dtype()), shape_str(shape()), dtype_name(dtype()));
  MCD_CHECK(t.device() == device(), "Tensor::set_tangent: tangent on {} for a primal on {}",
            t.device().str(), device().str());
  // A tangent never carries a tangent or history of its own.
  impl().tangent = t.detach().impl_ptr();
}

void Tensor::backward(const Tensor& grad_output) const {
  mcd::backward({*this},
                grad_output.defined() ? std::vector<Tensor>{grad_output} : std::vector<Tensor>{});
}

// ---- in-place

Tensor& Tensor::copy_(const Tensor& src) {
  check_defined("copy_", src);
  // From another device: move the values here first (without autograd), then copy as usual.
  if (src.device() != device()) return copy_(src.detach().to(device()));
  Tensor s = detail::expand_view(src, shape());
  if (detail::on_device(*this)) {
    require_device_ops<ElementwiseDeviceOps>("copy_", *this).copy(*this, s);
    return *this;
  }
  auto g = kc::make_geometry(shape(), {strides(), s.strides()});
  visit_dtype(dtype(), raw_data(), [&](auto* out) {
    visit_dtype(s.dtype(), const_cast<void*>(s.raw_data()),
                [&](auto* in) { kc::copy_cpu(g, out, in); });
  });
  return *this;
}

Tensor& Tensor::fill_(double value) {
  if (detail::on_device(*this)) {
    require_device_ops<ElementwiseDeviceOps>("fill_", *this).fill(*this, value);
    return *this;
  }
  visit_dtype(dtype(), raw_data(), [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    const T v = static_cast<T>(value);
    if (is_contiguous()) {
      std::fill(p, p + numel(), v);
    } else {
      auto g = kc::make_geometry(shape(), {strides()});
      kc::for_each_run(g, [&](const auto& off, std::int64_t n, const auto& st) {
        for (std::int64_t i = 0; i < n; ++i)
          p[off[0] + i * st[0]] = v;
      });
    }
  });
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_same_dtype("add_", *this, other);
  check_same_device("add_", {this, &other});
  NoGradGuard no_grad;
  Tensor addend = alpha == 1.0 ? other : mul(other.detach(), alpha);
  Tensor a = detail::expand_view(addend, shape());
  if (detail::on_device(*this)) {
    check_floating("add_", *this);
    require_device_ops<ElementwiseDeviceOps>("add_", *this).binary(BinaryOp::Add, *this, *this, a);
    return *this;
  }
  auto g = kc::make_geometry(shape(), {strides(), strides(), a.strides()});
  MCD_DISPATCH_FLOATING(dtype(), "add_", {
    scalar_t* p = data<scalar_t>();
    kc::binary_cpu<scalar_t>(kc::BinaryOp::Add, g, p, p, a.data<scalar_t>());
  });
  return *this;
}

Tensor& Tensor::mul_(double value) {
  MCD_CHECK(is_contiguous(), "mul_: expected a contiguous tensor, got strides {} for shape {}",
            shape_str(strides()), shape_str(shape()));
  if (detail::on_device(*this)) {
    check_floating("mul_", *this);
    require_device_ops<ElementwiseDeviceOps>("mul_", *this)
        .unary(UnaryOp::Scale, *this, *this, value);
    return *this;
  }
  MCD_DISPATCH_FLOATING(dtype(), "mul_", {
    scalar_t* p = data<scalar_t>();
    kc::unary_cpu<scalar_t>(kc::UnaryOp::Scale, numel(), p, p, value);
  });
  return *this;
}

// ---- printing and checks

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::string s = fmt::format("Tensor(shape={}, dtype={}, device={}", shape_str(shape()),
                              dtype_name(dtype()), device().str());
  if (requires_grad()) s += ", requires_grad";
  if (numel() <= 32) {
    const auto v = to_doubles();
    s += fmt::format(", values=[{}]", fmt::join(v, ", "));
  }
  return s + ")";
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << t.str();
}

void check_defined(const char* op, const Tensor& t) {
  MCD_CHECK(t.defined(), "{}: an input tensor is undefined", op);
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a);
  check_defined(op, b);
  MCD_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch, {} with shape {} vs {} with shape {}", op,
            dtype_name(a.dtype()), shape_str(a.shape()), dtype_name(b.dtype()),
            shape_str(b.shape()));
}

void check_floating(const char* op, const Tensor& t) {
  check_defined(op, t);
  MCD_CHECK(is_floating(t.dtype()), "{}: expected a float32 or float64 tensor, got {} of shape {}",
            op, dtype_name(t.dtype()), shape_str(t.shape()));
}

}  // namespace mcd
