// matmul (GEMM through the CPU kernel, or cuBLAS through the device table) and linear (a
// composition of matmul and add). Transposed operands are read in place on both backends.
#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/engine/mac_counter.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/linalg.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/kernels/cpu/gemm.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;

namespace {

// A 2-D matrix as GEMM sees it: row-major data, possibly read transposed, with a row stride.
struct GemmOperand {
  Tensor data;
  bool transposed = false;
  std::int64_t ld = 0;
};

GemmOperand as_operand(const Tensor& m) {
  const auto& st = m.strides();
  const std::int64_t rows = m.shape()[0], cols = m.shape()[1];
  if (st[1] == 1 && st[0] >= std::max<std::int64_t>(cols, 1)) return {m, false, st[0]};
  if (st[0] == 1 && st[1] >= std::max<std::int64_t>(rows, 1)) return {m, true, st[1]};
  Tensor c = detail::contiguous_data(m);
  return {c, false, std::max<std::int64_t>(cols, 1)};
}

template <class T>
void gemm_2d(const Tensor& a, const Tensor& b, Tensor& out) {
  const GemmOperand oa = as_operand(a), ob = as_operand(b);
  const std::int64_t M = a.shape()[0], K = a.shape()[1], N = b.shape()[1];
  kc::gemm_cpu<T>(oa.transposed, ob.transposed, M, N, K, T(1), oa.data.template data<T>(), oa.ld,
                  ob.data.template data<T>(), ob.ld, T(0), out.data<T>(),
                  std::max<std::int64_t>(N, 1));
}

// t (batch..., R, C), batch of nb elements, as a (nb, R, C) view: without a copy when the
// batch dimensions collapse into one stride (broadcast batches included), else a copy.
Tensor as_batch3(const Tensor& t, std::int64_t nb) {
  const std::int64_t d = t.dim();
  const std::int64_t R = t.shape()[d - 2], C = t.shape()[d - 1];
  const Shape& st = t.strides();
  std::int64_t batch_stride = 0, next = -1;  // next: the inner batch dim already seen
  bool collapses = true;
  for (std::int64_t i = d - 3; i >= 0; --i) {
    if (t.shape()[i] == 1) continue;
    if (next < 0)
      batch_stride = st[i];
    else if (st[i] != st[next] * t.shape()[next])
      collapses = false;
    next = i;
  }
  if (collapses)
    return detail::make_view(t, {nb, R, C}, {batch_stride, st[d - 2], st[d - 1]}, t.offset());
  const Tensor c = detail::contiguous_data(t);
  return detail::make_view(c, {nb, R, C}, {R * C, C, 1}, c.offset());
}

// The device path: one batched GEMM through the device table on (nb, M, K) and (nb, K, N)
// views of the broadcast operands.
Tensor matmul_device(const Tensor& a, const Tensor& b, std::int64_t M, std::int64_t K,
                     std::int64_t N) {
  check_same_device("matmul", {&a, &b});
  NnDeviceOps& ops = require_device_ops<NnDeviceOps>("matmul", a);
  const Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                       Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
  Shape sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {M, K});
  sb.insert(sb.end(), {K, N});
  so.insert(so.end(), {M, N});
  const std::int64_t nb = shape_numel(batch);
  Tensor out = Tensor::empty(so, a.dtype(), a.device());
  add_macs(nb * M * N * K);
  if (nb == 0 || M == 0 || N == 0) return out;
  Tensor out3 = detail::make_view(out, {nb, M, N}, {M * N, N, 1}, 0);
  ops.matmul(as_batch3(detail::expand_view(a, sa), nb), as_batch3(detail::expand_view(b, sb), nb),
             out3);
  return out;
}

Tensor matmul_forward(const Tensor& a, const Tensor& b) {
  check_same_dtype("matmul", a, b);
  check_floating("matmul", a);
  MCD_CHECK(a.dim() >= 2 && b.dim() >= 2,
            "matmul: expected matrices of rank >= 2, got shapes {} and {}", shape_str(a.shape()),
            shape_str(b.shape()));
  const std::int64_t M = a.shape()[a.dim() - 2], K = a.shape()[a.dim() - 1];
  const std::int64_t K2 = b.shape()[b.dim() - 2], N = b.shape()[b.dim() - 1];
  MCD_CHECK(K == K2, "matmul: inner dimensions differ, shapes {} and {}", shape_str(a.shape()),
            shape_str(b.shape()));
  if (!a.device().is_cpu() || !b.device().is_cpu()) return matmul_device(a, b, M, K, N);
  if (a.dim() == 2 && b.dim() == 2) {
    add_macs(M * N * K);
    Tensor out = Tensor::empty({M, N}, a.dtype());
    MCD_DISPATCH_FLOATING(a.dtype(), "matmul", gemm_2d<scalar_t>(a, b, out));
    return out;
  }
  const Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                       Shape(b.shape().begin(), b.shape().end() - 2), "matmul");
  Shape sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {M, K});
  sb.insert(sb.end(), {K, N});
  so.insert(so.end(), {M, N});
  const Tensor ac = detail::contiguous_data(detail::expand_view(a, sa));
  const Tensor bc = detail::contiguous_data(detail::expand_view(b, sb));
  Tensor out = Tensor::empty(so, a.dtype());
  const std::int64_t nb = shape_numel(batch);
  add_macs(nb * M * N * K);
  for (std::int64_t i = 0; i < nb; ++i) {
    Tensor ai = detail::make_view(ac, {M, K}, {K, 1}, ac.offset() + i * M * K);
    Tensor bi = detail::make_view(bc, {K, N}, {N, 1}, bc.offset() + i * K * N);
    Tensor oi = detail::make_view(out, {M, N}, {N, 1}, i * M * N);
    MCD_DISPATCH_FLOATING(a.dtype(), "matmul", gemm_2d<scalar_t>(ai, bi, oi));
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor out = matmul_forward(a, b);
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  record(out, "matmul", {a, b},
         [ad = a.detach(), bd = b.detach(), need_a, need_b](const Tensor& g) {
           // da = g b^T, db = a^T g (summed over broadcast batch dimensions)
           return std::vector<Tensor>{
               need_a ? sum_to_shape(matmul(g, bd.transpose(-1, -2)), ad.shape()) : Tensor(),
               need_b ? sum_to_shape(matmul(ad.transpose(-1, -2), g), bd.shape()) : Tensor()};
         });
  propagate_tangent(out, {a, b}, [&] {
    Tensor t;
    if (a.impl().tangent) t = matmul(a.tangent(), b.detach());
    if (b.impl().tangent) {
      Tensor tb = matmul(a.detach(), b.tangent());
      t = t.defined() ? add(t, tb) : tb;
    }
    return t.expand(out.shape()).contiguous();
  });
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined("linear", weight);
  MCD_CHECK(weight.dim() == 2, "linear: weight must be (out, in), got shape {}",
            shape_str(weight.shape()));
  MCD_CHECK(x.dim() >= 1 && x.shape().back() == weight.shape()[1],
            "linear: input of shape {} does not match weight of shape {} (in = {})",
            shape_str(x.shape()), shape_str(weight.shape()), weight.shape()[1]);
  if (bias.defined())
    MCD_CHECK(bias.dim() == 1 && bias.shape()[0] == weight.shape()[0],
              "linear: bias of shape {} for weight of shape {}", shape_str(bias.shape()),
              shape_str(weight.shape()));
  const Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, weight.shape()[1]});
  Tensor y = matmul(x2, weight.transpose(0, 1));
  if (bias.defined()) y = add(y, bias);
  if (x.dim() != 2) {
    Shape out_shape = x.shape();
    out_shape.back() = weight.shape()[0];
    y = y.reshape(out_shape);
  }
  return y;
}

}  // namespace mcd
