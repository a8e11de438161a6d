// Elementwise ops. Each op: forward (kernel call), vjp (cotangents da, db, reduced back over
// broadcast dimensions), jvp (tangent from the inputs' tangents), side by side. Forwards on a
// device run its elementwise table on the strided inputs; the rules are the same everywhere.
#include <cmath>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops/elementwise.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/kernels/cpu/elementwise.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;

namespace {

Tensor binary_forward(kc::BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_same_dtype(name, a, b);
  check_floating(name, a);
  check_same_device(name, {&a, &b});
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  const Tensor ae = detail::expand_view(a, shape), be = detail::expand_view(b, shape);
  if (detail::on_device(a)) {
    require_device_ops<ElementwiseDeviceOps>(name, a).binary(op, out, ae, be);
    return out;
  }
  const auto g = kc::make_geometry(shape, {out.strides(), ae.strides(), be.strides()});
  MCD_DISPATCH_FLOATING(a.dtype(), name, {
    kc::binary_cpu<scalar_t>(op, g, out.data<scalar_t>(), ae.data<scalar_t>(), be.data<scalar_t>());
  });
  return out;
}

Tensor unary_forward(kc::UnaryOp op, const char* name, const Tensor& x, double scalar = 0.0) {
  check_floating(name, x);
  if (detail::on_device(x)) {
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    require_device_ops<ElementwiseDeviceOps>(name, x).unary(op, out, x, scalar);
    return out;
  }
  const Tensor xc = detail::contiguous_data(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  MCD_DISPATCH_FLOATING(x.dtype(), name, {
    kc::unary_cpu<scalar_t>(op, x.numel(), xc.data<scalar_t>(), out.data<scalar_t>(), scalar);
  });
  return out;
}

// out = v where x > 0, else 0: the relu derivative applied to v.
template <class T>
void relu_mask(std::int64_t n, const T* v, const T* x, T* out) {
#pragma omp parallel for if (n > (1 << 15)) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const T vi = v[i];  // loaded unconditionally so the loop vectorises to a masked select
    out[i] = x[i] > T(0) ? vi : T(0);
  }
}

}  // namespace

// ---- add / sub

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(kc::BinaryOp::Add, "add", a, b);
  record(out, "add", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(g, sb)};
  });
  propagate_tangent(out, {a, b}, [&] {
    if (!has_tangent(a)) return tangent_or_zeros(b).expand(out.shape()).contiguous();
    if (!has_tangent(b)) return a.tangent().expand(out.shape()).contiguous();
    return add(a.tangent(), b.tangent());
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(kc::BinaryOp::Sub, "sub", a, b);
  record(out, "sub", {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), neg(sum_to_shape(g, sb))};
  });
  propagate_tangent(out, {a, b}, [&] {
    if (!has_tangent(b)) return a.tangent().expand(out.shape()).contiguous();
    if (!has_tangent(a)) return neg(b.tangent()).expand(out.shape()).contiguous();
    return sub(a.tangent(), b.tangent());
  });
  return out;
}

// ---- mul / div

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(kc::BinaryOp::Mul, "mul", a, b);
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  record(out, "mul", {a, b}, [ad = a.detach(), bd = b.detach(), need_a, need_b](const Tensor& g) {
    return std::vector<Tensor>{need_a ? sum_to_shape(mul(g, bd), ad.shape()) : Tensor(),
                               need_b ? sum_to_shape(mul(g, ad), bd.shape()) : Tensor()};
  });
  propagate_tangent(out, {a, b}, [&] {
    const Tensor ad = a.detach(), bd = b.detach();
    Tensor t;
    if (has_tangent(a)) t = mul(a.tangent(), bd);
    if (has_tangent(b)) t = t.defined() ? add(t, mul(ad, b.tangent())) : mul(ad, b.tangent());
    return t.expand(out.shape()).contiguous();
  });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(kc::BinaryOp::Div, "div", a, b);
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  // d(a/b) = da / b - (a/b) db / b
  record(out, "div", {a, b},
         [bd = b.detach(), od = out.detach(), sa = a.shape(), need_a, need_b](const Tensor& g) {
           const Tensor g_over_b = div(g, bd);
           return std::vector<Tensor>{
               need_a ? sum_to_shape(g_over_b, sa) : Tensor(),
               need_b ? sum_to_shape(neg(mul(g_over_b, od)), bd.shape()) : Tensor()};
         });
  propagate_tangent(out, {a, b}, [&] {
    const Tensor bd = b.detach(), od = out.detach();
    Tensor t;
    if (has_tangent(a)) t = div(a.tangent(), bd);
    if (has_tangent(b)) {
      Tensor tb = neg(div(mul(od, b.tangent()), bd));
      t = t.defined() ? add(t, tb) : tb;
    }
    return t.expand(out.shape()).contiguous();
  });
  return out;
}

// ---- scalar forms

Tensor add(const Tensor& a, double b) {
  Tensor out = unary_forward(kc::UnaryOp::AddScalar, "add", a, b);
  record(out, "add_scalar", {a}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  propagate_tangent(out, {a}, [&] { return a.tangent(); });
  return out;
}

Tensor mul(const Tensor& a, double b) {
  Tensor out = unary_forward(kc::UnaryOp::Scale, "mul", a, b);
  record(out, "mul_scalar", {a}, [b](const Tensor& g) { return std::vector<Tensor>{mul(g, b)}; });
  propagate_tangent(out, {a}, [&] { return mul(a.tangent(), b); });
  return out;
}

Tensor neg(const Tensor& a) {
  Tensor out = unary_forward(kc::UnaryOp::Neg, "neg", a);
  record(out, "neg", {a}, [](const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
  propagate_tangent(out, {a}, [&] { return neg(a.tangent()); });
  return out;
}

// ---- transcendental and activations: y = f(x), dy = f'(x) dx

Tensor exp(const Tensor& x) {
  Tensor y = unary_forward(kc::UnaryOp::Exp, "exp", x);
  record(y, "exp", {x},
         [yd = y.detach()](const Tensor& g) { return std::vector<Tensor>{mul(g, yd)}; });
  propagate_tangent(y, {x}, [&] { return mul(x.tangent(), y.detach()); });
  return y;
}

Tensor log(const Tensor& x) {
  Tensor y = unary_forward(kc::UnaryOp::Log, "log", x);
  record(y, "log", {x},
         [xd = x.detach()](const Tensor& g) { return std::vector<Tensor>{div(g, xd)}; });
  propagate_tangent(y, {x}, [&] { return div(x.tangent(), x.detach()); });
  return y;
}

Tensor sqrt(const Tensor& x) {
  Tensor y = unary_forward(kc::UnaryOp::Sqrt, "sqrt", x);
  record(y, "sqrt", {x},
         [yd = y.detach()](const Tensor& g) { return std::vector<Tensor>{div(mul(g, 0.5), yd)}; });
  propagate_tangent(y, {x}, [&] { return div(mul(x.tangent(), 0.5), y.detach()); });
  return y;
}

Tensor pow(const Tensor& x, double p) {
  Tensor y = unary_forward(kc::UnaryOp::Pow, "pow", x, p);
  // d x^p = p x^(p-1) dx
  auto deriv = [p](const Tensor& xd) { return mul(pow(xd, p - 1.0), p); };
  record(y, "pow", {x}, [xd = x.detach(), deriv](const Tensor& g) {
    return std::vector<Tensor>{mul(g, deriv(xd))};
  });
  propagate_tangent(y, {x}, [&] { return mul(x.tangent(), deriv(x.detach())); });
  return y;
}

Tensor pow(const Tensor& x, const Tensor& e) {
  Tensor y = binary_forward(kc::BinaryOp::Pow, "pow", x, e);
  // d x^e = e x^(e-1) dx + x^e log(x) de
  const bool need_x = x.requires_grad(), need_e = e.requires_grad();
  record(
      y, "pow", {x, e},
      [xd = x.detach(), ed = e.detach(), yd = y.detach(), need_x, need_e](const Tensor& g) {
        return std::vector<Tensor>{
            need_x ? sum_to_shape(mul(g, mul(ed, pow(xd, add(ed, -1.0)))), xd.shape()) : Tensor(),
            need_e ? sum_to_shape(mul(g, mul(yd, log(xd))), ed.shape()) : Tensor()};
      });
  propagate_tangent(y, {x, e}, [&] {
    const Tensor xd = x.detach(), ed = e.detach(), yd = y.detach();
    Tensor t;
    if (has_tangent(x)) t = mul(x.tangent(), mul(ed, pow(xd, add(ed, -1.0))));
    if (has_tangent(e)) {
      Tensor te = mul(e.tangent(), mul(yd, log(xd)));
      t = t.defined() ? add(t, te) : te;
    }
    return t.expand(y.shape()).contiguous();
  });
  return y;
}

Tensor relu(const Tensor& x) {
  Tensor y = unary_forward(kc::UnaryOp::Relu, "relu", x);
  // The mask is 1 where x > 0 (derivative 0 at 0, as PyTorch).
  auto mask_mul = [](const Tensor& v, const Tensor& xd) {
    check_same_device("relu", {&v, &xd});
    Tensor out = Tensor::empty(v.shape(), v.dtype(), v.device());
    if (detail::on_device(v)) {
      require_device_ops<ElementwiseDeviceOps>("relu", v).relu_mask(out, v, xd);
      return out;
    }
    const Tensor vc = detail::contiguous_data(v), xc = detail::contiguous_data(xd);
    MCD_DISPATCH_FLOATING(v.dtype(), "relu", {
      relu_mask<scalar_t>(v.numel(), vc.data<scalar_t>(), xc.data<scalar_t>(),
                          out.data<scalar_t>());
    });
    return out;
  };
  record(y, "relu", {x}, [xd = x.detach(), mask_mul](const Tensor& g) {
    return std::vector<Tensor>{mask_mul(g, xd)};
  });
  propagate_tangent(y, {x}, [&] { return mask_mul(x.tangent(), x.detach()); });
  return y;
}

Tensor sigmoid(const Tensor& x) {
  Tensor y = unary_forward(kc::UnaryOp::Sigmoid, "sigmoid", x);
  auto deriv = [](const Tensor& yd) { return mul(yd, add(neg(yd), 1.0)); };  // y (1 - y)
  record(y, "sigmoid", {x}, [yd = y.detach(), deriv](const Tensor& g) {
    return std::vector<Tensor>{mul(g, deriv(yd))};
  });
  propagate_tangent(y, {x}, [&] { return mul(x.tangent(), deriv(y.detach())); });
  return y;
}

Tensor softplus(const Tensor& x) {
  Tensor y = unary_forward(kc::UnaryOp::Softplus, "softplus", x);
  record(y, "softplus", {x},
         [xd = x.detach()](const Tensor& g) { return std::vector<Tensor>{mul(g, sigmoid(xd))}; });
  propagate_tangent(y, {x}, [&] { return mul(x.tangent(), sigmoid(x.detach())); });
  return y;
}

}  // namespace mcd
