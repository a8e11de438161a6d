// Differentiable views and conversions. A view shares storage; its vjp maps the cotangent
// back to the base's shape and its tangent is the same view of the base's tangent.
#include <algorithm>
#include <numeric>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_backend.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/tensor.h>
#include <mcd/kernels/cpu/elementwise.h>

#include "dispatch.h"

namespace mcd {

namespace detail {

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides,
                 std::int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl().storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

Tensor expand_view(const Tensor& t, const Shape& shape) {
  const std::size_t n = shape.size(), r = t.shape().size();
  MCD_CHECK(n >= r, "expand: cannot expand shape {} to fewer dimensions {}", shape_str(t.shape()),
            shape_str(shape));
  Shape strides(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (i < n - r) continue;  // new leading dimension: stride 0
    const std::int64_t src = t.shape()[i - (n - r)];
    MCD_CHECK(src == shape[i] || src == 1, "expand: cannot expand shape {} to {}",
              shape_str(t.shape()), shape_str(shape));
    strides[i] = src == shape[i] ? t.strides()[i - (n - r)] : 0;
  }
  return make_view(t, shape, strides, t.offset());
}

Tensor permute_view(const Tensor& t, const std::vector<std::int64_t>& dims) {
  const auto rank = t.dim();
  MCD_CHECK(static_cast<std::int64_t>(dims.size()) == rank,
            "permute: {} dimensions given for a tensor of shape {}", dims.size(),
            shape_str(t.shape()));
  Shape shape(rank), strides(rank);
  std::vector<bool> seen(rank, false);
  for (std::int64_t i = 0; i < rank; ++i) {
    const auto d = normalize_dim(dims[i], rank, "permute");
    MCD_CHECK(!seen[d], "permute: dimension {} repeated for shape {}", d, shape_str(t.shape()));
    seen[d] = true;
    shape[i] = t.shape()[d];
    strides[i] = t.strides()[d];
  }
  return make_view(t, shape, strides, t.offset());
}

Tensor contiguous_data(const Tensor& t) {
  if (t.is_contiguous()) return t.detach();
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  out.copy_(t);
  return out;
}

}  // namespace detail

namespace {
std::vector<std::int64_t> inverse_permutation(const std::vector<std::int64_t>& dims,
                                              std::int64_t rank) {
  std::vector<std::int64_t> inv(rank);
  for (std::int64_t i = 0; i < rank; ++i)
    inv[normalize_dim(dims[i], rank, "permute")] = i;
  return inv;
}
}  // namespace

Tensor Tensor::detach() const {
  return detail::make_view(*this, shape(), strides(), offset());
}

Tensor Tensor::reshape(const Shape& requested) const {
  // Resolve a single -1 from the element count.
  Shape shape = requested;
  std::int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MCD_CHECK(infer < 0, "reshape: more than one -1 in {}", shape_str(requested));
      infer = static_cast<std::int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    MCD_CHECK(known != 0 && numel() % known == 0, "reshape: cannot reshape {} into {}",
              shape_str(this->shape()), shape_str(requested));
    shape[infer] = numel() / known;
  }
  MCD_CHECK(shape_numel(shape) == numel(), "reshape: cannot reshape {} ({} elements) into {}",
            shape_str(this->shape()), numel(), shape_str(requested));
  const Tensor base = detail::contiguous_data(*this);
  Tensor out = detail::make_view(base, shape, contiguous_strides(shape), base.offset());
  const Shape in_shape = this->shape();
  record(out, "reshape", {*this},
         [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
  propagate_tangent(out, {*this}, [&] { return tangent_or_zeros(*this).reshape(shape); });
  return out;
}

Tensor Tensor::permute(const std::vector<std::int64_t>& dims) const {
  Tensor out = detail::permute_view(*this, dims);
  const auto inv = inverse_permutation(dims, dim());
  record(out, "permute", {*this},
         [inv](const Tensor& g) { return std::vector<Tensor>{g.permute(inv)}; });
  propagate_tangent(out, {*this}, [&] { return tangent_or_zeros(*this).permute(dims); });
  return out;
}

Tensor Tensor::transpose(std::int64_t d0, std::int64_t d1) const {
  std::vector<std::int64_t> dims(dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, dim(), "transpose")],
            dims[normalize_dim(d1, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::slice(std::int64_t d, std::int64_t start, std::int64_t end,
                     std::int64_t step) const {
  d = normalize_dim(d, dim(), "slice");
  const std::int64_t n = shape()[d];
  MCD_CHECK(step > 0, "slice: step must be positive, got {}", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<std::int64_t>(start, 0, n);
  end = std::clamp<std::int64_t>(end, start, n);
  Shape sh = shape(), st = strides();
  sh[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor out = detail::make_view(*this, sh, st, offset() + start * strides()[d]);
  const Shape in_shape = shape();
  const DType dt = dtype();
  record(out, "slice", {*this}, [=](const Tensor& g) {
    // On the cotangent's device, which is the input's.
    Tensor full = Tensor::zeros(in_shape, dt, g.device());
    full.slice(d, start, end, step).copy_(g);
    return std::vector<Tensor>{full};
  });
  propagate_tangent(out, {*this},
                    [&] { return tangent_or_zeros(*this).slice(d, start, end, step); });
  return out;
}

Tensor Tensor::expand(const Shape& shape) const {
  Tensor out = detail::expand_view(*this, shape);
  const Shape in_shape = this->shape();
  record(out, "expand", {*this},
         [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to_shape(g, in_shape)}; });
  propagate_tangent(out, {*this}, [&] { return tangent_or_zeros(*this).expand(shape); });
  return out;
}

Tensor Tensor::unsqueeze(std::int64_t d) const {
  d = normalize_dim(d, dim() + 1, "unsqueeze");
  Shape sh = shape();
  sh.insert(sh.begin() + d, 1);
  return reshape(sh);
}

Tensor Tensor::squeeze(std::int64_t d) const {
  d = normalize_dim(d, dim(), "squeeze");
  MCD_CHECK(shape()[d] == 1, "squeeze: dimension {} of shape {} is not 1", d, shape_str(shape()));
  Shape sh = shape();
  sh.erase(sh.begin() + d);
  return reshape(sh);
}

Tensor Tensor::flatten(std::int64_t start_dim, std::int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  start_dim = normalize_dim(start_dim, dim(), "flatten");
  end_dim = normalize_dim(end_dim, dim(), "flatten");
  MCD_CHECK(start_dim <= end_dim, "flatten: start_dim {} after end_dim {}", start_dim, end_dim);
  Shape sh(shape().begin(), shape().begin() + start_dim);
  std::int64_t merged = 1;
  for (std::int64_t i = start_dim; i <= end_dim; ++i)
    merged *= shape()[i];
  sh.push_back(merged);
  sh.insert(sh.end(), shape().begin() + end_dim + 1, shape().end());
  return reshape(sh);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape(), dtype(), device());
  out.copy_(*this);
  record(out, "clone", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  propagate_tangent(out, {*this}, [&] { return tangent_or_zeros(*this).clone(); });
  return out;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = Tensor::empty(shape(), target, device());
  out.copy_(*this);
  if (is_floating(target) && is_floating(dtype())) {
    const DType source = dtype();
    record(out, "to", {*this},
           [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
    propagate_tangent(out, {*this}, [&] { return tangent_or_zeros(*this).to(target); });
  }
  return out;
}

namespace {

// The elements a strided view can reach, from its offset: 1 + sum (size - 1) * stride (strides
// are never negative here), or 0 for an empty view.
std::int64_t reachable_span(const Tensor& t) {
  if (t.numel() == 0) return 0;
  std::int64_t span = 1;
  for (std::size_t d = 0; d < t.shape().size(); ++d)
    span += (t.shape()[d] - 1) * t.strides()[d];
  return span;
}

// A contiguous host copy of t, which may live on a device and be any strided view: the span
// of storage the view reaches is copied as one block, then viewed and compacted on the host.
Tensor host_contiguous(const Tensor& t) {
  if (t.device().is_cpu()) return detail::contiguous_data(t);
  const std::int64_t span = reachable_span(t);
  Tensor block = Tensor::empty({span}, t.dtype());
  if (span > 0)
    require_device_backend(t.device(), "Tensor::to")
        .copy(block.raw_data(), Device::cpu(), t.raw_data(), t.device(),
              static_cast<std::size_t>(span) * dtype_size(t.dtype()));
  return detail::contiguous_data(detail::make_view(block, t.shape(), t.strides(), 0));
}

}  // namespace

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  const char* op = "Tensor::to";
  const Tensor host = host_contiguous(*this);
  Tensor out;
  if (target.is_cpu()) {
    // host_contiguous made a fresh copy unless this was already a contiguous host tensor,
    // which target == device() excluded.
    out = host.detach();
  } else {
    out = Tensor::empty(shape(), dtype(), target);
    if (numel() > 0)
      require_device_backend(target, op)
          .copy(out.raw_data(), target, host.raw_data(), Device::cpu(),
                static_cast<std::size_t>(numel()) * dtype_size(dtype()));
  }
  if (is_floating(dtype())) {
    const Device source = device();
    record(out, "to_device", {*this},
           [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
    propagate_tangent(out, {*this}, [&] { return tangent_or_zeros(*this).to(target); });
  }
  return out;
}

}  // namespace mcd
