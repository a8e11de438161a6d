// concat: copies each input into its slice of the output; the vjp hands each input its slice.
// Works on any device whose copy_ does (the copies run there).
#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/shape_ops.h>

#include "../dispatch.h"

namespace mcd {

Tensor concat(const std::vector<Tensor>& tensors, std::int64_t dim) {
  MCD_CHECK(!tensors.empty(), "concat: no tensors given");
  const Tensor& first = tensors[0];
  check_defined("concat", first);
  dim = normalize_dim(dim, first.dim(), "concat");
  Shape out_shape = first.shape();
  out_shape[dim] = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    check_same_dtype("concat", first, t);
    check_same_device("concat", {&first, &t});
    bool ok = t.dim() == first.dim();
    for (std::int64_t d = 0; ok && d < t.dim(); ++d)
      ok = d == dim || t.shape()[d] == first.shape()[d];
    MCD_CHECK(ok, "concat: tensor {} has shape {}, incompatible with {} along dimension {}", i,
              shape_str(t.shape()), shape_str(first.shape()), dim);
    out_shape[dim] += t.shape()[dim];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<std::int64_t> starts;
  std::int64_t pos = 0;
  for (const Tensor& t : tensors) {
    starts.push_back(pos);
    detail::make_view(out, out.shape(), out.strides(), 0)
        .slice(dim, pos, pos + t.shape()[dim])
        .copy_(t);
    pos += t.shape()[dim];
  }
  std::vector<std::int64_t> sizes;
  for (const Tensor& t : tensors)
    sizes.push_back(t.shape()[dim]);
  record(out, "concat", tensors, [starts, sizes, dim](const Tensor& g) {
    std::vector<Tensor> parts;
    for (std::size_t i = 0; i < starts.size(); ++i)
      parts.push_back(g.slice(dim, starts[i], starts[i] + sizes[i]).contiguous());
    return parts;
  });
  propagate_tangent(out, tensors, [&] {
    std::vector<Tensor> ts;
    for (const Tensor& t : tensors)
      ts.push_back(tangent_or_zeros(t));
    return concat(ts, dim);
  });
  return out;
}

}  // namespace mcd
