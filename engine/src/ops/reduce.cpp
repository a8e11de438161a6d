// Sum, mean, sum_to_shape and argmax. Reductions over a contiguous block of dimensions run
// in place; anything else is first permuted so the reduced dimensions come last. Both reach
// the kernels (CPU, or the device's elementwise table) as a contiguous (outer, reduced, inner)
// array.
#include <algorithm>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops/elementwise.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/kernels/cpu/reduce.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;

namespace {

std::vector<std::int64_t> normalized_dims(const std::vector<std::int64_t>& dims, std::int64_t rank,
                                          const char* op) {
  std::vector<std::int64_t> out;
  for (auto d : dims)
    out.push_back(normalize_dim(d, rank, op));
  std::sort(out.begin(), out.end());
  MCD_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(),
            "{}: a dimension appears twice", op);
  return out;
}

Shape reduced_shape(const Shape& in, const std::vector<std::int64_t>& dims, bool keepdim) {
  Shape out;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(in.size()); ++i) {
    const bool reduced = std::binary_search(dims.begin(), dims.end(), i);
    if (!reduced)
      out.push_back(in[i]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

// Forward of sum over sorted `dims`, no autograd.
Tensor sum_forward(const Tensor& x, const std::vector<std::int64_t>& dims, const Shape& out_shape) {
  const std::int64_t rank = x.dim();
  Tensor src;
  std::int64_t outer = 1, reduced = 1, inner = 1;
  const bool block =
      dims.empty() || dims.back() - dims.front() + 1 == static_cast<std::int64_t>(dims.size());
  if (block) {
    src = detail::contiguous_data(x);
    const std::int64_t d0 = dims.empty() ? rank : dims.front();
    const std::int64_t d1 = dims.empty() ? rank - 1 : dims.back();
    for (std::int64_t i = 0; i < rank; ++i) {
      if (i < d0)
        outer *= x.shape()[i];
      else if (i <= d1)
        reduced *= x.shape()[i];
      else
        inner *= x.shape()[i];
    }
  } else {
    std::vector<std::int64_t> perm;
    for (std::int64_t i = 0; i < rank; ++i)
      if (!std::binary_search(dims.begin(), dims.end(), i)) perm.push_back(i);
    for (auto d : dims) {
      perm.push_back(d);
      reduced *= x.shape()[d];
    }
    src = detail::contiguous_data(detail::permute_view(x, perm));
    outer = x.numel() / std::max<std::int64_t>(reduced, 1);
    if (reduced == 0) outer = shape_numel(out_shape);
  }
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (detail::on_device(x)) {
    require_device_ops<ElementwiseDeviceOps>("sum", x).sum(out, src, outer, reduced, inner);
    return out;
  }
  MCD_DISPATCH_FLOATING(x.dtype(), "sum", {
    kc::sum_outer_inner_cpu<scalar_t>(outer, reduced, inner, src.data<scalar_t>(),
                                      out.data<scalar_t>());
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims_in, bool keepdim) {
  check_floating("sum", x);
  const auto dims = normalized_dims(dims_in, x.dim(), "sum");
  const Shape out_shape = reduced_shape(x.shape(), dims, keepdim);
  Tensor out = sum_forward(x, dims, out_shape);
  const Shape in_shape = x.shape();
  const Shape kept_shape = reduced_shape(in_shape, dims, true);
  record(out, "sum", {x}, [in_shape, kept_shape](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(kept_shape).expand(in_shape).contiguous()};
  });
  propagate_tangent(out, {x}, [&] { return sum(x.tangent(), dims, keepdim); });
  return out;
}

Tensor sum(const Tensor& x) {
  std::vector<std::int64_t> all(x.dim());
  for (std::int64_t i = 0; i < x.dim(); ++i)
    all[i] = i;
  return sum(x, all, false);
}

Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  std::int64_t count = 1;
  for (auto d : normalized_dims(dims, x.dim(), "mean"))
    count *= x.shape()[d];
  MCD_CHECK(count > 0, "mean: reducing over an empty dimension of shape {}", shape_str(x.shape()));
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(count));
}

Tensor mean(const Tensor& x) {
  MCD_CHECK(x.numel() > 0, "mean: empty tensor of shape {}", shape_str(x.shape()));
  return mul(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const std::int64_t lead = x.dim() - static_cast<std::int64_t>(shape.size());
  MCD_CHECK(lead >= 0, "sum_to_shape: cannot reduce {} to {}", shape_str(x.shape()),
            shape_str(shape));
  std::vector<std::int64_t> dims;
  for (std::int64_t i = 0; i < x.dim(); ++i) {
    if (i < lead) {
      dims.push_back(i);
      continue;
    }
    const std::int64_t target = shape[i - lead];
    if (target == 1 && x.shape()[i] != 1)
      dims.push_back(i);
    else
      MCD_CHECK(target == x.shape()[i], "sum_to_shape: cannot reduce {} to {}",
                shape_str(x.shape()), shape_str(shape));
  }
  return sum(x, dims, true).reshape(shape);
}

Tensor argmax(const Tensor& x, std::int64_t dim) {
  check_floating("argmax", x);
  dim = normalize_dim(dim, x.dim(), "argmax");
  MCD_CHECK(x.shape()[dim] > 0, "argmax: empty dimension {} in shape {}", dim,
            shape_str(x.shape()));
  const Tensor xc = detail::contiguous_data(x);
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t i = 0; i < dim; ++i)
    outer *= x.shape()[i];
  for (std::int64_t i = dim + 1; i < x.dim(); ++i)
    inner *= x.shape()[i];
  Shape out_shape = x.shape();
  out_shape.erase(out_shape.begin() + dim);
  Tensor out = Tensor::empty(out_shape, DType::Int64, x.device());
  if (detail::on_device(x)) {
    require_device_ops<ElementwiseDeviceOps>("argmax", x)
        .argmax(out, xc, outer, x.shape()[dim], inner);
    return out;
  }
  MCD_DISPATCH_FLOATING(x.dtype(), "argmax", {
    kc::argmax_outer_inner_cpu<scalar_t>(outer, x.shape()[dim], inner, xc.data<scalar_t>(),
                                         out.data<std::int64_t>());
  });
  return out;
}

}  // namespace mcd
