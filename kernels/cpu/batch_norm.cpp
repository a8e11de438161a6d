// Batch normalisation kernels, statistics accumulated in double. Every per-element map is
// affine in (u, x - mean) with per-channel coefficients, so the forward, VJP and JVP share two
// primitives, channel moments and a channel affine map. Both stream memory in order: when the
// spatial extent S is long, over (n, c) runs of S values with per-channel partial sums per row
// chunk; when S is short (2-D inputs, late ResNet stages), over rows of C * S columns, where
// per-(n, c) loops would be dominated by loop overhead.
//
// A fused residual is added to the forward's output (and its tangent to the JVP's); a fused
// ReLU clamps the forward's output, and in the VJP and JVP it masks the input u (dy) or the
// output (y_t) of a primitive with the mask recomputed from x (and the residual). Masked runs are
// processed in strips: the mask is a plain select loop into (or over) an L1-sized buffer and the
// arithmetic the plain loop, so both vectorise. (A select fused into the arithmetic does not:
// without -ffast-math the compiler will not evaluate the arithmetic speculatively and keeps a
// branch per element, several times slower on random signs.)
#include <mcd/kernels/cpu/batch_norm.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 14;
constexpr std::int64_t kShortSpatial = 32;   // below this S, sweep rows of C * S columns
constexpr std::int64_t kBlockColumns = 512;  // columns per task in the row sweep
constexpr std::int64_t kRowChunks = 16;      // row chunks of the long-S statistics
constexpr std::int64_t kLanes = 8;           // independent partial sums of a run
constexpr std::int64_t kStrip = 256;         // elements per strip, a multiple of kLanes

bool worth_parallel(const BatchNormDims& d) {
  return d.n * d.c * d.s > kParallelMin;
}

// How the fused ReLU enters the channel map: not at all; Clamp: out = max(0, out) (the
// forward, whose map is the pre-activation); MaskInput: u masked by the recomputed mask (the
// VJP's dy); MaskOutput: out masked by it (the JVP's y_t).
enum class Relu { None, Clamp, MaskInput, MaskOutput };

// The fused ReLU's gate: the forward's map scale_c (x - mean_c) + shift_c per channel, and the
// residual. An element passes where that value, rounded to T, plus the residual's element is
// positive: the forward's very expressions (channel_affine with u absent, then add_run), so
// the VJP and JVP see exactly the mask the forward applied.
template <class T>
struct ReluGate {
  const double* scale = nullptr;
  const double* shift = nullptr;
  const T* residual = nullptr;  // the whole (N, C, S) residual, or null
};

// ---- loops over a contiguous piece: of one channel (scalar coefficients, long S) or of a
// row of columns (per-column coefficient arrays, short S)

// out = max(0, out), with the relu op's expression.
template <class T>
void clamp_run(std::int64_t len, T* out) {
#pragma omp simd
  for (std::int64_t i = 0; i < len; ++i) {
    const T v = out[i];
    out[i] = v > T(0) ? v : T(0);
  }
}

// out += addend, with the add op's expression.
template <class T>
void add_run(std::int64_t len, T* out, const T* addend) {
#pragma omp simd
  for (std::int64_t i = 0; i < len; ++i)
    out[i] = out[i] + addend[i];
}

// out = v where the gate passes, else 0 (as the relu op's mask, T(0)); out may be v. r is the
// residual's piece, or null.
template <class T>
void gate_run(std::int64_t len, const T* v, const T* x, const T* r, double m, double gs, double gh,
              T* out) {
  if (r == nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < len; ++i) {
      const T vi = v[i];  // loaded unconditionally so the loop vectorises to a masked select
      out[i] = static_cast<T>(gs * (static_cast<double>(x[i]) - m) + gh) > T(0) ? vi : T(0);
    }
    return;
  }
#pragma omp simd
  for (std::int64_t i = 0; i < len; ++i) {
    const T vi = v[i];
    const T pre = static_cast<T>(gs * (static_cast<double>(x[i]) - m) + gh) + r[i];
    out[i] = pre > T(0) ? vi : T(0);
  }
}
template <class T>
void gate_cols(std::int64_t len, const T* v, const T* x, const T* r, const double* m,
               const double* gs, const double* gh, T* out) {
  if (r == nullptr) {
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      const T vj = v[j];
      out[j] =
          static_cast<T>(gs[j] * (static_cast<double>(x[j]) - m[j]) + gh[j]) > T(0) ? vj : T(0);
    }
    return;
  }
#pragma omp simd
  for (std::int64_t j = 0; j < len; ++j) {
    const T vj = v[j];
    const T pre = static_cast<T>(gs[j] * (static_cast<double>(x[j]) - m[j]) + gh[j]) + r[j];
    out[j] = pre > T(0) ? vj : T(0);
  }
}

// out = a * u + b * (x - m) + k; u may be null (a is then ignored).
template <class T>
void affine_run(std::int64_t len, const T* u, double a, const T* x, double m, double b, double k,
                T* out) {
  if (u != nullptr) {
#pragma omp simd
    for (std::int64_t s = 0; s < len; ++s)
      out[s] =
          static_cast<T>(a * static_cast<double>(u[s]) + b * (static_cast<double>(x[s]) - m) + k);
  } else {
#pragma omp simd
    for (std::int64_t s = 0; s < len; ++s)
      out[s] = static_cast<T>(b * (static_cast<double>(x[s]) - m) + k);
  }
}
template <class T>
void affine_cols(std::int64_t len, const T* u, const double* a, const T* x, const double* m,
                 const double* b, const double* k, T* out) {
  if (u != nullptr) {
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j)
      out[j] = static_cast<T>(a[j] * static_cast<double>(u[j]) +
                              b[j] * (static_cast<double>(x[j]) - m[j]) + k[j]);
  } else {
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j)
      out[j] = static_cast<T>(b[j] * (static_cast<double>(x[j]) - m[j]) + k[j]);
  }
}

// a1[j] += u - su[j] and, when x is given, a2[j] += (u - su[j])(x - sx[j]), column by column.
template <class T>
void accumulate_cols(std::int64_t len, const T* u, const double* su, const T* x, const double* sx,
                     double* a1, double* a2) {
  if (x != nullptr) {
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      const double du = static_cast<double>(u[j]) - su[j];
      a1[j] += du;
      a2[j] += du * (static_cast<double>(x[j]) - sx[j]);
    }
  } else {
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j)
      a1[j] += static_cast<double>(u[j]) - su[j];
  }
}

// The pair of sums of one run, sum(u - su) and sum((u - su)(x - sx)), in kLanes independent
// partial sums: a single accumulator is bound by the add latency, not by memory. A run may be
// added in pieces; all but the last must hold a multiple of kLanes values, so that the sums
// do not depend on the piecing. The lanes are summed in local arrays, which the compiler keeps
// in vector registers (on the members it emitted one scalar operation per lane, twice as slow);
// lane l still adds the elements l, l + kLanes, ... in order, so the sums are the same.
struct RunSums {
  double p1[kLanes] = {}, p2[kLanes] = {};

  template <class T>
  void add(std::int64_t len, const T* u, double su, const T* x, double sx) {
    double a1[kLanes], a2[kLanes];
    std::copy(p1, p1 + kLanes, a1);
    std::copy(p2, p2 + kLanes, a2);
    const std::int64_t whole = len / kLanes * kLanes;
    if (x != nullptr) {
      for (std::int64_t s = 0; s < whole; s += kLanes) {
#pragma omp simd
        for (std::int64_t l = 0; l < kLanes; ++l) {
          const double du = static_cast<double>(u[s + l]) - su;
          a1[l] += du;
          a2[l] += du * (static_cast<double>(x[s + l]) - sx);
        }
      }
      for (std::int64_t s = whole; s < len; ++s) {
        const double du = static_cast<double>(u[s]) - su;
        a1[0] += du;
        a2[0] += du * (static_cast<double>(x[s]) - sx);
      }
    } else {
      for (std::int64_t s = 0; s < whole; s += kLanes) {
#pragma omp simd
        for (std::int64_t l = 0; l < kLanes; ++l)
          a1[l] += static_cast<double>(u[s + l]) - su;
      }
      for (std::int64_t s = whole; s < len; ++s)
        a1[0] += static_cast<double>(u[s]) - su;
    }
    std::copy(a1, a1 + kLanes, p1);
    std::copy(a2, a2 + kLanes, p2);
  }

  void finish(double& a1, double& a2) const {
    for (std::int64_t l = 0; l < kLanes; ++l) {
      a1 += p1[l];
      a2 += p2[l];
    }
  }
};

// ---- the two primitives

// Per channel c: s1[c] = sum(u - mu_c) and, when x is given, s2[c] = sum((u - mu_c)(x - m_c)).
// mu may be null (zero shift). With a gate, u is masked by it first (x must then be given and
// m be the mean), and the masked u is also written to `masked` when that is not null.
template <class T>
void channel_moments(const BatchNormDims& d, const T* u, const double* mu, const T* x,
                     const double* m, double* s1, double* s2, const ReluGate<T>& gate = {},
                     T* masked = nullptr) {
  const bool gated = gate.scale != nullptr;
  if (d.s >= kShortSpatial) {
    // Long S: stream memory in order; each of a fixed number of row chunks keeps per-channel
    // partial sums, combined in chunk order so results do not depend on the thread count.
    const std::int64_t chunks = worth_parallel(d) ? std::min<std::int64_t>(d.n, kRowChunks) : 1;
    const auto nc = static_cast<std::size_t>(d.c);
    std::vector<double> part1(static_cast<std::size_t>(chunks) * nc, 0.0), part2(part1);
#pragma omp parallel for if (chunks > 1) schedule(static)
    for (std::int64_t k = 0; k < chunks; ++k) {
      std::vector<double> a1(nc, 0.0), a2(nc, 0.0);
      T strip[kStrip];
      for (std::int64_t n = k * d.n / chunks; n < (k + 1) * d.n / chunks; ++n)
        for (std::int64_t c = 0; c < d.c; ++c) {
          const std::int64_t at = (n * d.c + c) * d.s;
          const double su = mu != nullptr ? mu[c] : 0.0, sx = x != nullptr ? m[c] : 0.0;
          const T* px = x != nullptr ? x + at : nullptr;
          RunSums run;
          if (!gated) {
            run.add(d.s, u + at, su, px, sx);
          } else {
            for (std::int64_t s0 = 0; s0 < d.s; s0 += kStrip) {
              const std::int64_t len = std::min(kStrip, d.s - s0);
              T* dst = masked != nullptr ? masked + at + s0 : strip;
              const T* pr = gate.residual != nullptr ? gate.residual + at + s0 : nullptr;
              gate_run(len, u + at + s0, px + s0, pr, m[c], gate.scale[c], gate.shift[c], dst);
              run.add(len, dst, su, px + s0, sx);
            }
          }
          run.finish(a1[c], a2[c]);
        }
      std::copy(a1.begin(), a1.end(), part1.begin() + k * d.c);
      std::copy(a2.begin(), a2.end(), part2.begin() + k * d.c);
    }
    for (std::int64_t c = 0; c < d.c; ++c) {
      double t1 = 0.0, t2 = 0.0;
      for (std::int64_t k = 0; k < chunks; ++k) {
        t1 += part1[k * d.c + c];
        t2 += part2[k * d.c + c];
      }
      s1[c] = t1;
      if (x != nullptr) s2[c] = t2;
    }
    return;
  }
  // Short S: a task owns a block of whole channels and sweeps every row over its columns.
  const std::int64_t cols = d.c * d.s;
  const std::int64_t per_block = std::max<std::int64_t>(1, kBlockColumns / d.s);  // channels
  const std::int64_t blocks = (d.c + per_block - 1) / per_block;
#pragma omp parallel for if (worth_parallel(d) && blocks > 1) schedule(static)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * per_block, c1 = std::min(d.c, c0 + per_block);
    const std::int64_t k0 = c0 * d.s, nk = (c1 - c0) * d.s;
    const std::size_t gated_nk = gated ? static_cast<std::size_t>(nk) : 0;
    std::vector<double> su(nk), sx(nk), gs(gated_nk), gh(gated_nk), a1(nk, 0.0), a2(nk, 0.0);
    for (std::int64_t j = 0; j < nk; ++j) {
      const std::int64_t c = c0 + j / d.s;
      su[j] = mu != nullptr ? mu[c] : 0.0;
      sx[j] = x != nullptr ? m[c] : 0.0;
      if (gated) {
        gs[j] = gate.scale[c];
        gh[j] = gate.shift[c];
      }
    }
    T strip[kStrip];
    for (std::int64_t n = 0; n < d.n; ++n) {
      const T* pu = u + n * cols + k0;
      const T* px = x != nullptr ? x + n * cols + k0 : nullptr;
      if (!gated) {
        accumulate_cols(nk, pu, su.data(), px, sx.data(), a1.data(), a2.data());
        continue;
      }
      for (std::int64_t j0 = 0; j0 < nk; j0 += kStrip) {
        const std::int64_t len = std::min(kStrip, nk - j0);
        T* dst = masked != nullptr ? masked + n * cols + k0 + j0 : strip;
        const T* pr = gate.residual != nullptr ? gate.residual + n * cols + k0 + j0 : nullptr;
        gate_cols(len, pu + j0, px + j0, pr, sx.data() + j0, gs.data() + j0, gh.data() + j0, dst);
        accumulate_cols(len, dst, su.data() + j0, px + j0, sx.data() + j0, a1.data() + j0,
                        a2.data() + j0);
      }
    }
    for (std::int64_t c = c0; c < c1; ++c) {
      double t1 = 0.0, t2 = 0.0;
      for (std::int64_t s = 0; s < d.s; ++s) {
        t1 += a1[(c - c0) * d.s + s];
        t2 += a2[(c - c0) * d.s + s];
      }
      s1[c] = t1;
      if (x != nullptr) s2[c] = t2;
    }
  }
}

// out = a_c * u + b_c * (x - m_c) + k_c for every element; u may be null (a is then ignored).
// addend (N, C, S), when given, is added to that (in T) before the fused ReLU as `relu` says
// (for the masks, m is the mean and the gate is given; MaskInput needs u).
template <class T>
void channel_affine(const BatchNormDims& d, const T* u, const double* a, const T* x,
                    const double* m, const double* b, const double* k, T* out,
                    Relu relu = Relu::None, const ReluGate<T>& gate = {},
                    const T* addend = nullptr) {
  if (d.s >= kShortSpatial) {
#pragma omp parallel for collapse(2) if (worth_parallel(d)) schedule(static)
    for (std::int64_t n = 0; n < d.n; ++n)
      for (std::int64_t c = 0; c < d.c; ++c) {
        const std::int64_t at = (n * d.c + c) * d.s;
        const double ac = a[c], mc = m[c], bc = b[c], kc = k[c];
        const T* pu = u != nullptr ? u + at : nullptr;
        if (relu == Relu::None && addend == nullptr) {
          affine_run(d.s, pu, ac, x + at, mc, bc, kc, out + at);
          continue;
        }
        const bool masked = relu == Relu::MaskInput || relu == Relu::MaskOutput;
        const double gs = masked ? gate.scale[c] : 0.0, gh = masked ? gate.shift[c] : 0.0;
        T strip[kStrip];
        for (std::int64_t s0 = 0; s0 < d.s; s0 += kStrip) {
          const std::int64_t len = std::min(kStrip, d.s - s0);
          const T* px = x + at + s0;
          T* po = out + at + s0;
          const T* su = pu != nullptr ? pu + s0 : nullptr;
          const T* pr = gate.residual != nullptr ? gate.residual + at + s0 : nullptr;
          if (relu == Relu::MaskInput) {
            gate_run(len, su, px, pr, mc, gs, gh, strip);
            su = strip;
          }
          affine_run(len, su, ac, px, mc, bc, kc, po);
          if (addend != nullptr) add_run(len, po, addend + at + s0);
          if (relu == Relu::Clamp) clamp_run(len, po);
          if (relu == Relu::MaskOutput) gate_run(len, po, px, pr, mc, gs, gh, po);
        }
      }
    return;
  }
  // Short S: per-column coefficients, then row sweeps.
  const std::int64_t cols = d.c * d.s;
  const bool gated = relu == Relu::MaskInput || relu == Relu::MaskOutput;
  std::vector<double> ak(cols), mk(cols), bk(cols), kk(cols), gsk(gated ? cols : 0),
      ghk(gated ? cols : 0);
  for (std::int64_t j = 0; j < cols; ++j) {
    const std::int64_t c = j / d.s;
    ak[j] = a[c];
    mk[j] = m[c];
    bk[j] = b[c];
    kk[j] = k[c];
    if (gated) {
      gsk[j] = gate.scale[c];
      ghk[j] = gate.shift[c];
    }
  }
#pragma omp parallel for if (worth_parallel(d) && d.n > 1) schedule(static)
  for (std::int64_t n = 0; n < d.n; ++n) {
    const T* pu = u != nullptr ? u + n * cols : nullptr;
    if (relu == Relu::None || relu == Relu::Clamp) {
      affine_cols(cols, pu, ak.data(), x + n * cols, mk.data(), bk.data(), kk.data(),
                  out + n * cols);
      if (addend != nullptr) add_run(cols, out + n * cols, addend + n * cols);
      if (relu == Relu::Clamp) clamp_run(cols, out + n * cols);
      continue;
    }
    T strip[kStrip];
    for (std::int64_t j0 = 0; j0 < cols; j0 += kStrip) {
      const std::int64_t len = std::min(kStrip, cols - j0);
      const T* px = x + n * cols + j0;
      T* po = out + n * cols + j0;
      const T* su = pu != nullptr ? pu + j0 : nullptr;
      const T* pr = gate.residual != nullptr ? gate.residual + n * cols + j0 : nullptr;
      if (relu == Relu::MaskInput) {
        gate_cols(len, su, px, pr, mk.data() + j0, gsk.data() + j0, ghk.data() + j0, strip);
        su = strip;
      }
      affine_cols(len, su, ak.data() + j0, px, mk.data() + j0, bk.data() + j0, kk.data() + j0, po);
      if (addend != nullptr) add_run(len, po, addend + n * cols + j0);
      if (relu == Relu::MaskOutput)
        gate_cols(len, po, px, pr, mk.data() + j0, gsk.data() + j0, ghk.data() + j0, po);
    }
  }
}

template <class T>
double value_or(const T* p, std::int64_t c, double fallback) {
  return p != nullptr ? static_cast<double>(p[c]) : fallback;
}

using Coefs = std::vector<double>;

// The forward's per-channel map y = scale_c (x - mean_c) + shift_c. The VJP and JVP of the
// fused ReLU recompute their gate with this same function, hence the same coefficients.
template <class T>
void forward_coefficients(std::size_t nc, const T* weight, const T* bias, const double* invstd,
                          double* scale, double* shift) {
  for (std::size_t c = 0; c < nc; ++c) {
    scale[c] = value_or(weight, static_cast<std::int64_t>(c), 1.0) * invstd[c];
    shift[c] = value_or(bias, static_cast<std::int64_t>(c), 0.0);
  }
}

}  // namespace

template <class T>
void batch_norm_forward_train_cpu(const BatchNormDims& d, const T* x, const T* weight,
                                  const T* bias, double eps, const BatchNormTail<T>& tail, T* y,
                                  double* mean, double* var, double* invstd) {
  const double count = static_cast<double>(d.n * d.s);
  const std::size_t nc = static_cast<std::size_t>(d.c);
  Coefs first(nc, 0.0), sum(nc), sq(nc), scale(nc), shift(nc);
  // One pass over x - K_c, K_c the channel's first value. By Samuelson's inequality
  // |K_c - mean| <= sqrt(M) std, so the cancellation in sq / M - (sum / M)^2 costs at most a
  // factor M of double precision: far below float32 resolution for any real batch.
  if (count > 0)
    for (std::size_t c = 0; c < nc; ++c)
      first[c] = static_cast<double>(x[static_cast<std::int64_t>(c) * d.s]);
  channel_moments(d, x, first.data(), x, first.data(), sum.data(), sq.data());
  for (std::size_t c = 0; c < nc; ++c) {
    const double shifted_mean = sum[c] / count;
    mean[c] = first[c] + shifted_mean;
    var[c] = std::max(0.0, sq[c] / count - shifted_mean * shifted_mean);
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
  }
  forward_coefficients(nc, weight, bias, invstd, scale.data(), shift.data());
  channel_affine<T>(d, nullptr, scale.data(), x, mean, scale.data(), shift.data(), y,
                    tail.relu ? Relu::Clamp : Relu::None, {}, tail.residual);
}

template <class T>
void batch_norm_forward_eval_cpu(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                                 const double* mean, const double* invstd,
                                 const BatchNormTail<T>& tail, T* y) {
  const std::size_t nc = static_cast<std::size_t>(d.c);
  Coefs scale(nc), shift(nc);
  forward_coefficients(nc, weight, bias, invstd, scale.data(), shift.data());
  channel_affine<T>(d, nullptr, scale.data(), x, mean, scale.data(), shift.data(), y,
                    tail.relu ? Relu::Clamp : Relu::None, {}, tail.residual);
}

template <class T>
void batch_norm_backward_cpu(const BatchNormDims& d, bool training, const BatchNormTail<T>& tail,
                             const T* dy, const T* x, const T* weight, const T* bias,
                             const double* mean, const double* invstd, T* dx, T* dweight, T* dbias,
                             T* dresidual) {
  const double count = static_cast<double>(d.n * d.s);
  const std::size_t nc = static_cast<std::size_t>(d.c);
  const bool relu = tail.relu;
  // With the ReLU every use of dy below reads it masked: dy := mask * dy.
  Coefs gate_scale, gate_shift;
  ReluGate<T> gate;
  if (relu) {
    gate_scale.resize(nc);
    gate_shift.resize(nc);
    forward_coefficients(nc, weight, bias, invstd, gate_scale.data(), gate_shift.data());
    gate = {gate_scale.data(), gate_shift.data(), tail.residual};
  }
  // With the ReLU, when the sums are needed their pass also writes the masked dy, into
  // dresidual when wanted or else into dx, and the map below runs on it (in place in dx), so
  // the mask is computed once and needs no buffer. A wanted dresidual forces that pass.
  if (!relu) dresidual = nullptr;
  T* masked_dy = dresidual != nullptr ? dresidual : dx;
  Coefs sum_dy(nc, 0.0), sum_dy_xc(nc, 0.0);
  const bool sums = training || dweight != nullptr || dbias != nullptr || dresidual != nullptr;
  if (sums)
    channel_moments(d, dy, nullptr, x, mean, sum_dy.data(), sum_dy_xc.data(), gate, masked_dy);
  for (std::size_t c = 0; c < nc; ++c) {
    if (dweight != nullptr) dweight[c] = static_cast<T>(sum_dy_xc[c] * invstd[c]);
    if (dbias != nullptr) dbias[c] = static_cast<T>(sum_dy[c]);
  }
  if (dx == nullptr) return;
  Coefs a(nc), b(nc, 0.0), k(nc, 0.0);
  for (std::size_t c = 0; c < nc; ++c) {
    const double is = invstd[c];
    a[c] = value_or(weight, static_cast<std::int64_t>(c), 1.0) * is;
    if (training) {
      // a * (dy - mean(dy) - xhat * mean(dy * xhat)), with xhat = (x - m) * is
      b[c] = -a[c] * is * (sum_dy_xc[c] * is) / count;
      k[c] = -a[c] * sum_dy[c] / count;
    }
  }
  if (relu && sums)
    channel_affine<T>(d, masked_dy, a.data(), x, mean, b.data(), k.data(), dx);
  else
    channel_affine(d, dy, a.data(), x, mean, b.data(), k.data(), dx,
                   relu ? Relu::MaskInput : Relu::None, gate);
}

template <class T>
void batch_norm_jvp_cpu(const BatchNormDims& d, bool training, const BatchNormTail<T>& tail,
                        const T* x, const T* x_t, const T* weight, const T* bias, const T* weight_t,
                        const T* bias_t, const T* residual_t, const double* mean,
                        const double* invstd, T* y_t) {
  const bool relu = tail.relu;
  const double count = static_cast<double>(d.n * d.s);
  const std::size_t nc = static_cast<std::size_t>(d.c);
  // mean(x_t) and sum((x_t - mean(x_t)) (x - m)) per channel, in training mode only; the
  // latter equals sum(x_t (x - m)) because sum(x - m) = 0 up to rounding of m.
  Coefs mt(nc, 0.0), cross(nc, 0.0);
  if (training && x_t != nullptr) {
    channel_moments(d, x_t, nullptr, x, mean, mt.data(), cross.data());
    for (std::size_t c = 0; c < nc; ++c)
      mt[c] /= count;
  }
  // y_t = a * x_t + b * (x - m) + k, collecting the x_t, xhat and constant terms.
  Coefs a(nc, 0.0), b(nc), k(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    const auto ci = static_cast<std::int64_t>(c);
    const double is = invstd[c], w = value_or(weight, ci, 1.0);
    b[c] = value_or(weight_t, ci, 0.0) * is;
    k[c] = value_or(bias_t, ci, 0.0);
    if (x_t == nullptr) continue;
    a[c] = w * is;
    if (training) {
      const double c2 = is * cross[c] / count;  // mean(xhat * (x_t - mean(x_t)))
      b[c] -= w * is * is * c2;
      k[c] -= w * is * mt[c];
    }
  }
  // y_t = the batch norm's y_t + residual_t; with the ReLU, masked.
  Coefs gate_scale, gate_shift;
  if (relu) {
    gate_scale.resize(nc);
    gate_shift.resize(nc);
    forward_coefficients(nc, weight, bias, invstd, gate_scale.data(), gate_shift.data());
  }
  channel_affine(d, x_t, a.data(), x, mean, b.data(), k.data(), y_t,
                 relu ? Relu::MaskOutput : Relu::None,
                 {gate_scale.data(), gate_shift.data(), tail.residual}, residual_t);
}

#define MCD_INSTANTIATE_BATCH_NORM(T)                                                              \
  template void batch_norm_forward_train_cpu<T>(const BatchNormDims&, const T*, const T*,          \
                                                const T*, double, const BatchNormTail<T>&, T*,     \
                                                double*, double*, double*);                        \
  template void batch_norm_forward_eval_cpu<T>(const BatchNormDims&, const T*, const T*, const T*, \
                                               const double*, const double*,                       \
                                               const BatchNormTail<T>&, T*);                       \
  template void batch_norm_backward_cpu<T>(const BatchNormDims&, bool, const BatchNormTail<T>&,    \
                                           const T*, const T*, const T*, const T*, const double*,  \
                                           const double*, T*, T*, T*, T*);                         \
  template void batch_norm_jvp_cpu<T>(const BatchNormDims&, bool, const BatchNormTail<T>&,         \
                                      const T*, const T*, const T*, const T*, const T*, const T*,  \
                                      const T*, const double*, const double*, T*);
MCD_INSTANTIATE_BATCH_NORM(float)
MCD_INSTANTIATE_BATCH_NORM(double)
#undef MCD_INSTANTIATE_BATCH_NORM

}  // namespace mcd::kernels::cpu
