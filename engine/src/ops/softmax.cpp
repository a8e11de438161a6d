// Temperature softmax / log_softmax, per-sample cross-entropy and softmax KL: forward, vjp and
// jvp side by side. The losses save each row's log-sum-exp in float64 (B) so that the rules
// rebuild exact probabilities from the logits without storing a (B, V) softmax. On a device,
// forwards and rule kernels run its elementwise table; the rules are the same everywhere.
#include <cmath>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops/elementwise.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/kernels/cpu/softmax.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;
using detail::data_or_null;

namespace {

// x viewed as a contiguous (outer, V, inner) array around `dim`.
struct Lanes {
  std::int64_t outer = 1, v = 1, inner = 1;
};

Lanes lanes_of(const Shape& shape, std::int64_t dim) {
  Lanes l;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(shape.size()); ++i) {
    if (i < dim)
      l.outer *= shape[i];
    else if (i == dim)
      l.v = shape[i];
    else
      l.inner *= shape[i];
  }
  return l;
}

void check_tau(const char* op, double tau) {
  MCD_CHECK(std::isfinite(tau) && tau > 0.0,
            "{}: temperature tau must be positive and finite, got {}", op, tau);
}

void check_logits(const char* op, const char* what, const Tensor& z) {
  check_defined(op, z);
  check_floating(op, z);
  MCD_CHECK(z.dim() == 2 && z.size(1) > 0, "{}: {} must have shape (B, V) with V > 0, got {}", op,
            what, shape_str(z.shape()));
}

ElementwiseDeviceOps& device_ops(const char* op, const Tensor& t) {
  return require_device_ops<ElementwiseDeviceOps>(op, t);
}

// Shared forward of softmax and log_softmax.
Tensor softmax_forward(const char* op, const Tensor& x, const Lanes& l, double tau, bool log) {
  const Tensor xc = detail::contiguous_data(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (detail::on_device(x)) {
    device_ops(op, x).softmax_forward(y, xc, l.outer, l.v, l.inner, 1.0 / tau, log);
    return y;
  }
  MCD_DISPATCH_FLOATING(x.dtype(), op, {
    kc::softmax_forward_cpu<scalar_t>(l.outer, l.v, l.inner, xc.data<scalar_t>(), 1.0 / tau, log,
                                      y.data<scalar_t>());
  });
  return y;
}

// Applies one of the (outer, V, inner) rule kernels to the saved output y and a vector v.
Tensor apply_rule(SoftmaxRule rule, const Lanes& l, double tau, const Tensor& y, const Tensor& v) {
  check_same_device("softmax rule", {&y, &v});
  const Tensor vc = detail::contiguous_data(v);
  Tensor out = Tensor::empty(y.shape(), y.dtype(), y.device());
  if (detail::on_device(y)) {
    device_ops("softmax rule", y).softmax_rule(rule, out, y, vc, l.outer, l.v, l.inner, 1.0 / tau);
    return out;
  }
  MCD_DISPATCH_FLOATING(y.dtype(), "softmax rule", {
    const scalar_t* py = y.data<scalar_t>();
    const scalar_t* pv = vc.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    switch (rule) {
      case SoftmaxRule::SoftmaxVjpJvp:
        kc::softmax_backward_cpu<scalar_t>(l.outer, l.v, l.inner, py, pv, 1.0 / tau, po);
        break;
      case SoftmaxRule::LogSoftmaxVjp:
        kc::log_softmax_backward_cpu<scalar_t>(l.outer, l.v, l.inner, py, pv, 1.0 / tau, po);
        break;
      case SoftmaxRule::LogSoftmaxJvp:
        kc::log_softmax_jvp_cpu<scalar_t>(l.outer, l.v, l.inner, py, pv, 1.0 / tau, po);
        break;
    }
  });
  return out;
}

}  // namespace

// ---- softmax: y = softmax(x / tau); dx = y * (g - <g, y>) / tau; the Jacobian is symmetric,
// so y_t is the same map applied to x_t.

Tensor softmax(const Tensor& x, std::int64_t dim, double tau) {
  check_defined("softmax", x);
  check_floating("softmax", x);
  check_tau("softmax", tau);
  const Lanes l = lanes_of(x.shape(), normalize_dim(dim, x.dim(), "softmax"));
  Tensor y = softmax_forward("softmax", x, l, tau, false);
  record(y, "softmax", {x}, [yd = y.detach(), l, tau](const Tensor& g) {
    return std::vector<Tensor>{apply_rule(SoftmaxRule::SoftmaxVjpJvp, l, tau, yd, g)};
  });
  propagate_tangent(y, {x}, [&] {
    return apply_rule(SoftmaxRule::SoftmaxVjpJvp, l, tau, y.detach(), x.tangent());
  });
  return y;
}

// ---- log_softmax: dx = (g - softmax * sum(g)) / tau; y_t = (x_t - <softmax, x_t>) / tau.

Tensor log_softmax(const Tensor& x, std::int64_t dim, double tau) {
  check_defined("log_softmax", x);
  check_floating("log_softmax", x);
  check_tau("log_softmax", tau);
  const Lanes l = lanes_of(x.shape(), normalize_dim(dim, x.dim(), "log_softmax"));
  Tensor y = softmax_forward("log_softmax", x, l, tau, true);
  record(y, "log_softmax", {x}, [yd = y.detach(), l, tau](const Tensor& g) {
    return std::vector<Tensor>{apply_rule(SoftmaxRule::LogSoftmaxVjp, l, tau, yd, g)};
  });
  propagate_tangent(y, {x}, [&] {
    return apply_rule(SoftmaxRule::LogSoftmaxJvp, l, tau, y.detach(), x.tangent());
  });
  return y;
}

// ---- cross_entropy: loss_i = lse_i - z[i, y_i]; dz = (p - onehot) * g_i;
// loss_t_i = (p - onehot) . z_t_i.

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  check_logits("cross_entropy", "logits", logits);
  check_defined("cross_entropy", labels);
  const std::int64_t b = logits.size(0), v = logits.size(1);
  MCD_CHECK(labels.dtype() == DType::Int64 && labels.dim() == 1 && labels.size(0) == b,
            "cross_entropy: labels must be int64 of shape [{}] for logits {}, got {} {}", b,
            shape_str(logits.shape()), dtype_name(labels.dtype()), shape_str(labels.shape()));
  check_same_device("cross_entropy", {&logits, &labels});
  const bool device = detail::on_device(logits);
  const Tensor zc = detail::contiguous_data(logits), yc = detail::contiguous_data(labels);
  Tensor loss = Tensor::empty({b}, logits.dtype(), logits.device());
  Tensor lse = Tensor::empty({b}, DType::Float64, logits.device());  // (B)
  if (device) {
    // Labels stay on the device: an out-of-range one gives a NaN row (device_ops/elementwise.h).
    device_ops("cross_entropy", zc).cross_entropy_forward(loss, lse, zc, yc);
  } else {
    const std::int64_t* py = yc.data<std::int64_t>();
    for (std::int64_t i = 0; i < b; ++i)
      MCD_CHECK(py[i] >= 0 && py[i] < v,
                "cross_entropy: label {} of row {} is out of range [0, {}) for logits {}", py[i], i,
                v, shape_str(logits.shape()));
    MCD_DISPATCH_FLOATING(logits.dtype(), "cross_entropy", {
      kc::cross_entropy_forward_cpu<scalar_t>(b, v, zc.data<scalar_t>(), py, loss.data<scalar_t>(),
                                              lse.data<double>());
    });
  }

  record(loss, "cross_entropy", {logits}, [zc, yc, lse, b, v, device](const Tensor& g) {
    const Tensor gc = detail::contiguous_data(g);
    Tensor dz = Tensor::empty({b, v}, zc.dtype(), zc.device());
    if (device) {
      device_ops("cross_entropy backward", zc).cross_entropy_backward(dz, zc, yc, lse, gc);
      return std::vector<Tensor>{dz};
    }
    MCD_DISPATCH_FLOATING(zc.dtype(), "cross_entropy backward", {
      kc::cross_entropy_backward_cpu<scalar_t>(b, v, zc.data<scalar_t>(), yc.data<std::int64_t>(),
                                               lse.data<double>(), gc.data<scalar_t>(),
                                               dz.data<scalar_t>());
    });
    return std::vector<Tensor>{dz};
  });
  propagate_tangent(loss, {logits}, [&] {
    const Tensor zt = detail::contiguous_data(logits.tangent());
    Tensor lt = Tensor::empty({b}, zc.dtype(), zc.device());
    if (device) {
      device_ops("cross_entropy jvp", zc).cross_entropy_jvp(lt, zc, yc, lse, zt);
      return lt;
    }
    MCD_DISPATCH_FLOATING(zc.dtype(), "cross_entropy jvp", {
      kc::cross_entropy_jvp_cpu<scalar_t>(b, v, zc.data<scalar_t>(), yc.data<std::int64_t>(),
                                          lse.data<double>(), zt.data<scalar_t>(),
                                          lt.data<scalar_t>());
    });
    return lt;
  });
  return loss;
}

// ---- kl_div_softmax: kl_i = sum_c qT (log qT - log qS);
// ds = (qS - qT) / tau * g_i; dt = qT ((log qT - log qS) - kl_i) / tau * g_i; the jvp contracts
// the same two expressions with s_t and t_t.

Tensor kl_div_softmax(const Tensor& student_logits, const Tensor& target_logits, double tau) {
  check_logits("kl_div_softmax", "student logits", student_logits);
  check_logits("kl_div_softmax", "target logits", target_logits);
  MCD_CHECK(student_logits.shape() == target_logits.shape(),
            "kl_div_softmax: student logits {} and target logits {} must have the same shape",
            shape_str(student_logits.shape()), shape_str(target_logits.shape()));
  check_same_dtype("kl_div_softmax", student_logits, target_logits);
  check_tau("kl_div_softmax", tau);
  check_same_device("kl_div_softmax", {&student_logits, &target_logits});
  const std::int64_t b = student_logits.size(0), v = student_logits.size(1);
  const double inv_tau = 1.0 / tau;
  const bool device = detail::on_device(student_logits);
  const Tensor sc = detail::contiguous_data(student_logits);
  const Tensor tc = detail::contiguous_data(target_logits);

  Tensor kl = Tensor::empty({b}, sc.dtype(), sc.device());
  Tensor lse_s = Tensor::empty({b}, DType::Float64, sc.device());  // (B)
  Tensor lse_t = Tensor::empty({b}, DType::Float64, sc.device());  // (B)
  if (device) {
    device_ops("kl_div_softmax", sc).kl_div_softmax_forward(kl, lse_s, lse_t, sc, tc, inv_tau);
  } else {
    MCD_DISPATCH_FLOATING(sc.dtype(), "kl_div_softmax", {
      kc::kl_div_softmax_forward_cpu<scalar_t>(b, v, sc.data<scalar_t>(), tc.data<scalar_t>(),
                                               inv_tau, kl.data<scalar_t>(), lse_s.data<double>(),
                                               lse_t.data<double>());
    });
  }

  const bool need_s = student_logits.requires_grad(), need_t = target_logits.requires_grad();
  record(kl, "kl_div_softmax", {student_logits, target_logits},
         [sc, tc, lse_s, lse_t, b, v, inv_tau, need_s, need_t, device](const Tensor& g) {
           const Tensor gc = detail::contiguous_data(g);
           Tensor ds = need_s ? Tensor::empty({b, v}, sc.dtype(), sc.device()) : Tensor();
           Tensor dt = need_t ? Tensor::empty({b, v}, sc.dtype(), sc.device()) : Tensor();
           if (device) {
             device_ops("kl_div_softmax backward", sc)
                 .kl_div_softmax_backward(ds, dt, sc, tc, lse_s, lse_t, gc, inv_tau);
             return std::vector<Tensor>{ds, dt};
           }
           MCD_DISPATCH_FLOATING(sc.dtype(), "kl_div_softmax backward", {
             kc::kl_div_softmax_backward_cpu<scalar_t>(
                 b, v, sc.data<scalar_t>(), tc.data<scalar_t>(), inv_tau, lse_s.data<double>(),
                 lse_t.data<double>(), gc.data<scalar_t>(), data_or_null<scalar_t>(ds),
                 data_or_null<scalar_t>(dt));
           });
           return std::vector<Tensor>{ds, dt};
         });
  propagate_tangent(kl, {student_logits, target_logits}, [&] {
    const Tensor st =
        has_tangent(student_logits) ? detail::contiguous_data(student_logits.tangent()) : Tensor();
    const Tensor tt =
        has_tangent(target_logits) ? detail::contiguous_data(target_logits.tangent()) : Tensor();
    Tensor klt = Tensor::empty({b}, sc.dtype(), sc.device());
    if (device) {
      device_ops("kl_div_softmax jvp", sc)
          .kl_div_softmax_jvp(klt, sc, tc, lse_s, lse_t, st, tt, inv_tau);
      return klt;
    }
    MCD_DISPATCH_FLOATING(sc.dtype(), "kl_div_softmax jvp", {
      kc::kl_div_softmax_jvp_cpu<scalar_t>(b, v, sc.data<scalar_t>(), tc.data<scalar_t>(), inv_tau,
                                           lse_s.data<double>(), lse_t.data<double>(),
                                           data_or_null<scalar_t>(st), data_or_null<scalar_t>(tt),
                                           klt.data<scalar_t>());
    });
    return klt;
  });
  return kl;
}

}  // namespace mcd
