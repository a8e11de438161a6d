// batch_norm (also fused with relu), softmax / log_softmax, cross_entropy, kl_div_softmax and
// dropout: float64 gradient checks (VJP, JVP, <u, Jv> = <J^T u, v>), forward values against
// naive references, running statistics, stability at logits of magnitude 1e4, errors, and
// float32 agreement.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <vector>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/batch_norm.h>
#include <mcd/engine/ops/dropout.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>

#include "support/gradcheck.h"
#include "support/live_memory.h"

using namespace mcd;
using mcd::testing::check_gradients;
using mcd::testing::live_bytes_after;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

BatchNormOptions train_mode() {
  return {true, 0.1, 1e-5};
}
BatchNormOptions eval_mode() {
  return {false, 0.1, 1e-5};
}
BatchNormOptions with_relu(BatchNormOptions o) {
  o.relu = true;
  return o;
}

// An input from `draw` whose batch-norm pre-activations `pre` (the op without its ReLU) include
// negative values and none within 1e-3 of 0, so central differences never straddle the
// ReLU's kink. Draws again until one qualifies.
Tensor relu_safe_input(const std::function<Tensor()>& draw,
                       const std::function<Tensor(const Tensor&)>& pre) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    Tensor x = draw();
    double nearest = 1e300;
    std::int64_t negative = 0, positive = 0;
    for (const double v : pre(x).to_doubles()) {
      nearest = std::min(nearest, std::abs(v));
      (v < 0 ? negative : positive) += 1;
    }
    if (nearest >= 1e-3 && negative > 0 && positive > 0) return x;
  }
  FAIL("no input with pre-activations away from 0 in 200 draws");
  return {};
}

Tensor labels_of(const std::vector<std::int64_t>& y) {
  return Tensor::from_vector<std::int64_t>(y, {static_cast<std::int64_t>(y.size())});
}

// Every element finite and within atol + rtol * |want|; a failure names the worst element.
void check_close(const std::vector<double>& got, const std::vector<double>& want, double atol,
                 double rtol, const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::size_t worst = 0;
  double worst_excess = -1e300;
  for (std::size_t i = 0; i < got.size(); ++i) {
    double excess = std::abs(got[i] - want[i]) - (atol + rtol * std::abs(want[i]));
    if (!std::isfinite(got[i]) || std::isnan(excess)) excess = 1e300;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  if (got.empty()) return;
  INFO(what << ": worst element " << worst << " got " << got[worst] << " want " << want[worst]);
  CHECK(worst_excess <= 0.0);
}

// Per-channel batch norm over a row-major (N, C, S) array with the given statistics.
std::vector<double> naive_batch_norm(const std::vector<double>& x, std::int64_t n, std::int64_t c,
                                     std::int64_t s, const std::vector<double>& mean,
                                     const std::vector<double>& var, const std::vector<double>& w,
                                     const std::vector<double>& b, double eps) {
  std::vector<double> y(x.size());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < c; ++k)
      for (std::int64_t j = 0; j < s; ++j) {
        const std::size_t at = static_cast<std::size_t>((i * c + k) * s + j);
        const double wk = w.empty() ? 1.0 : w[k], bk = b.empty() ? 0.0 : b[k];
        y[at] = (x[at] - mean[k]) / std::sqrt(var[k] + eps) * wk + bk;
      }
  return y;
}

// Batch mean and biased variance per channel.
void naive_stats(const std::vector<double>& x, std::int64_t n, std::int64_t c, std::int64_t s,
                 std::vector<double>& mean, std::vector<double>& var) {
  mean.assign(c, 0.0);
  var.assign(c, 0.0);
  const double m = static_cast<double>(n * s);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < c; ++k)
      for (std::int64_t j = 0; j < s; ++j)
        mean[k] += x[(i * c + k) * s + j] / m;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < c; ++k)
      for (std::int64_t j = 0; j < s; ++j) {
        const double dlt = x[(i * c + k) * s + j] - mean[k];
        var[k] += dlt * dlt / m;
      }
}

// Softmax of one row without max subtraction: only for logits of moderate size.
std::vector<double> naive_softmax(const std::vector<double>& z, double tau) {
  std::vector<double> p(z.size());
  double sum = 0;
  for (std::size_t c = 0; c < z.size(); ++c)
    sum += p[c] = std::exp(z[c] / tau);
  for (auto& v : p)
    v /= sum;
  return p;
}

std::vector<double> row(const std::vector<double>& flat, std::int64_t i, std::int64_t v) {
  return {flat.begin() + i * v, flat.begin() + (i + 1) * v};
}

double naive_kl(const std::vector<double>& s, const std::vector<double>& t, double tau) {
  const auto qs = naive_softmax(s, tau), qt = naive_softmax(t, tau);
  double kl = 0;
  for (std::size_t c = 0; c < s.size(); ++c)
    kl += qt[c] * (std::log(qt[c]) - std::log(qs[c]));
  return kl;
}

// Runs f on float32 inputs and on the same values in float64, and compares the outputs, the
// VJP for a random cotangent and the JVP for random tangents (both also rounded to float32).
void check_float32_matches(const std::string& name, const testing::TensorFn& f,
                           const std::vector<Tensor>& inputs64, double tol = 1e-5) {
  Generator gen(99);
  std::vector<Tensor> in32, in64, tan32, tan64, wrt32, wrt64;
  for (const Tensor& t : inputs64) {
    if (!t.defined() || t.dtype() != DType::Float64) {
      in32.push_back(t);
      in64.push_back(t);
      tan32.emplace_back();
      tan64.emplace_back();
      continue;
    }
    in32.push_back(t.to(DType::Float32).set_requires_grad(true));
    in64.push_back(in32.back().detach().to(DType::Float64).set_requires_grad(true));
    wrt32.push_back(in32.back());
    wrt64.push_back(in64.back());
    tan32.push_back(random_tensor(t.shape(), gen).to(DType::Float32));
    tan64.push_back(tan32.back().to(DType::Float64));
  }
  const Tensor y32 = f(in32), y64 = f(in64);
  REQUIRE(y32.dtype() == DType::Float32);
  REQUIRE(y64.dtype() == DType::Float64);
  check_close(y32.to_doubles(), y64.to_doubles(), tol, tol, name + " forward");

  const Tensor u32 = random_tensor(y64.shape(), gen).to(DType::Float32);
  const auto g32 = grad({y32}, wrt32, {u32}), g64 = grad({y64}, wrt64, {u32.to(DType::Float64)});
  for (std::size_t k = 0; k < g32.size(); ++k)
    check_close(g32[k].to_doubles(), g64[k].to_doubles(), tol, tol,
                name + " vjp input " + std::to_string(k));

  auto as_fn = [&](const V& in) { return V{f(in)}; };
  std::vector<Tensor> p32, p64;
  for (std::size_t i = 0; i < in32.size(); ++i) {
    p32.push_back(in32[i].defined() ? in32[i].detach() : Tensor());
    p64.push_back(in64[i].defined() ? in64[i].detach() : Tensor());
  }
  const auto j32 = jvp(as_fn, p32, tan32), j64 = jvp(as_fn, p64, tan64);
  check_close(j32.tangents[0].to_doubles(), j64.tangents[0].to_doubles(), tol, tol, name + " jvp");
}

}  // namespace

// ---------------------------------------------------------------- batch_norm

TEST_CASE("batch_norm training-mode gradients are exact through the batch statistics",
          "[grad][batch_norm]") {
  Generator gen(21);
  const Tensor w = random_tensor({4}, gen, 0.5, 1.5), b = random_tensor({4}, gen);
  auto affine = [](const V& v) { return batch_norm(v[0], v[1], v[2], {}, {}, train_mode()); };
  auto plain = [](const V& v) { return batch_norm(v[0], {}, {}, {}, {}, train_mode()); };

  check_gradients("bn_train_4d", affine, {random_tensor({3, 4, 2, 3}, gen), w, b});
  check_gradients("bn_train_4d_plain", plain, {random_tensor({3, 4, 2, 3}, gen)});
  // (N, C, H, W) view of a (C, N, H, W) tensor: non-contiguous.
  check_gradients("bn_train_4d_noncontig", affine,
                  {random_tensor({4, 3, 3, 2}, gen).transpose(0, 1), w, b});
  // S = H * W >= 32 takes the per-channel loops; shorter S the row sweeps.
  check_gradients("bn_train_long_spatial", affine,
                  {random_tensor({2, 4, 8, 5}, gen).permute({0, 1, 3, 2}), w, b});
  check_gradients("bn_train_2d", affine, {random_tensor({6, 4}, gen), w, b});
  check_gradients("bn_train_2d_plain", plain, {random_tensor({4, 6}, gen).transpose(0, 1)});
  // Updating running statistics must not change the derivatives.
  check_gradients("bn_train_running_stats",
                  [](const V& v) {
                    Tensor rm = Tensor::zeros({4}, DType::Float64),
                           rv = Tensor::ones({4}, DType::Float64);
                    return batch_norm(v[0], v[1], v[2], rm, rv, train_mode());
                  },
                  {random_tensor({5, 4, 3}, gen, -2.0, 3.0), w, b});
}

TEST_CASE("batch_norm eval-mode gradients", "[grad][batch_norm]") {
  Generator gen(22);
  const Tensor rm = random_tensor({3}, gen), rv = random_tensor({3}, gen, 0.5, 2.0);
  const Tensor w = random_tensor({3}, gen, 0.5, 1.5), b = random_tensor({3}, gen);
  check_gradients(
      "bn_eval_4d",
      [rm, rv](const V& v) { return batch_norm(v[0], v[1], v[2], rm, rv, eval_mode()); },
      {random_tensor({2, 3, 3, 3}, gen).permute({0, 1, 3, 2}), w, b});
  check_gradients("bn_eval_long_spatial",
                  [rm, rv](const V& v) { return batch_norm(v[0], v[1], {}, rm, rv, eval_mode()); },
                  {random_tensor({2, 3, 6, 6}, gen), w});
  check_gradients("bn_eval_2d_plain",
                  [rm, rv](const V& v) { return batch_norm(v[0], {}, {}, rm, rv, eval_mode()); },
                  {random_tensor({5, 3}, gen)});
}

TEST_CASE("batch_norm with relu: gradients in training and eval modes", "[grad][batch_norm]") {
  Generator gen(25);
  const Tensor w = random_tensor({4}, gen, 0.5, 1.5), b = random_tensor({4}, gen, -0.8, 0.8);
  const Tensor rm = random_tensor({4}, gen), rv = random_tensor({4}, gen, 0.5, 2.0);
  // S = H * W >= 32 takes the per-channel loops, shorter S the row sweeps; the transposed view
  // of a (C, N, H, W) tensor is non-contiguous.
  struct Case {
    const char* name;
    Shape shape;
    bool transposed;
  };
  const std::vector<Case> cases = {{"4d", {3, 4, 2, 3}, false},
                                   {"4d_noncontig", {4, 3, 3, 2}, true},
                                   {"long_spatial", {2, 4, 8, 5}, false},
                                   {"2d", {6, 4}, false}};
  for (const bool training : {true, false}) {
    const BatchNormOptions plain_mode = training ? train_mode() : eval_mode();
    const BatchNormOptions o = with_relu(plain_mode);
    const Tensor crm = training ? Tensor() : rm, crv = training ? Tensor() : rv;
    for (const Case& c : cases) {
      const std::string name = std::string("bn_relu_") + (training ? "train_" : "eval_") + c.name;
      const auto draw = [&] {
        const Tensor t = random_tensor(c.shape, gen, -2.0, 2.0);
        return c.transposed ? t.transpose(0, 1) : t;
      };
      // weight and bias; weight only; neither.
      const Tensor x_affine = relu_safe_input(
          draw, [&](const Tensor& x) { return batch_norm(x, w, b, crm, crv, plain_mode); });
      check_gradients(
          name, [crm, crv, o](const V& v) { return batch_norm(v[0], v[1], v[2], crm, crv, o); },
          {x_affine, w, b});
      const Tensor x_weight = relu_safe_input(
          draw, [&](const Tensor& x) { return batch_norm(x, w, {}, crm, crv, plain_mode); });
      check_gradients(name + "_weight_only",
                      [crm, crv, o](const V& v) { return batch_norm(v[0], v[1], {}, crm, crv, o); },
                      {x_weight, w});
      const Tensor x_plain = relu_safe_input(
          draw, [&](const Tensor& x) { return batch_norm(x, {}, {}, crm, crv, plain_mode); });
      check_gradients(name + "_plain",
                      [crm, crv, o](const V& v) { return batch_norm(v[0], {}, {}, crm, crv, o); },
                      {x_plain});
    }
  }
}

TEST_CASE("batch_norm with relu equals relu(batch_norm) bit for bit", "[batch_norm]") {
  Generator gen(26);
  // Small and large shapes (the parallel loops of both loop orders), float64 and float32,
  // training and eval, with and without the affine parameters. Channel 0 is constant: in
  // training mode without a bias its pre-activations are exactly 0, where the ReLU's derivative
  // is 0.
  for (const DType dt : {DType::Float64, DType::Float32})
    for (const Shape& shape :
         {Shape{3, 4, 2, 3}, Shape{2, 4, 8, 5}, Shape{40, 8, 8, 8}, Shape{64, 600}, Shape{6, 4}})
      for (const bool training : {true, false})
        for (const bool affine : {true, false}) {
          const std::int64_t c = shape[1];
          INFO(dtype_name(dt) << " " << shape_str(shape) << (training ? " train" : " eval")
                              << (affine ? " affine" : ""));
          Tensor x = random_tensor(shape, gen, -1.0, 3.0);
          x.slice(1, 0, 1).fill_(0.7);
          V in{x.to(dt), random_tensor({c}, gen, 0.5, 1.5).to(dt),
               random_tensor({c}, gen, -0.5, 0.5).to(dt)};
          const Tensor rm = random_tensor({c}, gen).to(dt);
          const Tensor rv = random_tensor({c}, gen, 0.5, 2.0).to(dt);
          const BatchNormOptions plain = training ? train_mode() : eval_mode();
          // Each call gets its own running statistics; both must end up equal.
          auto fused = [&](const V& v, Tensor& m, Tensor& var) {
            return batch_norm(v[0], affine ? v[1] : Tensor(), affine ? v[2] : Tensor(), m, var,
                              with_relu(plain));
          };
          auto composed = [&](const V& v, Tensor& m, Tensor& var) {
            return relu(batch_norm(v[0], affine ? v[1] : Tensor(), affine ? v[2] : Tensor(), m, var,
                                   plain));
          };
          Tensor rm_f = rm.clone(), rv_f = rv.clone(), rm_c = rm.clone(), rv_c = rv.clone();
          V leaves_f, leaves_c;
          for (const Tensor& t : in) {
            leaves_f.push_back(t.detach().set_requires_grad(true));
            leaves_c.push_back(t.detach().set_requires_grad(true));
          }
          const Tensor y_f = fused(leaves_f, rm_f, rv_f), y_c = composed(leaves_c, rm_c, rv_c);
          REQUIRE(y_f.to_doubles() == y_c.to_doubles());
          CHECK(rm_f.to_doubles() == rm_c.to_doubles());
          CHECK(rv_f.to_doubles() == rv_c.to_doubles());
          std::int64_t zeros = 0;
          for (const double v : y_f.to_doubles())
            zeros += v == 0.0 ? 1 : 0;
          CHECK(zeros > 0);  // the ReLU is active somewhere

          const Tensor u = random_tensor(shape, gen).to(dt);
          const std::size_t wrt = affine ? 3 : 1;
          const V g_f = grad({y_f}, V(leaves_f.begin(), leaves_f.begin() + wrt), {u});
          const V g_c = grad({y_c}, V(leaves_c.begin(), leaves_c.begin() + wrt), {u});
          for (std::size_t k = 0; k < wrt; ++k) {
            INFO("vjp of input " << k);
            CHECK(g_f[k].to_doubles() == g_c[k].to_doubles());
          }

          const V tangents{random_tensor(shape, gen).to(dt), random_tensor({c}, gen).to(dt),
                           random_tensor({c}, gen).to(dt)};
          const V primals(in.begin(), in.begin() + wrt),
              tans(tangents.begin(), tangents.begin() + wrt);
          auto pad = [&](const V& v) {
            V all = in;
            for (std::size_t k = 0; k < v.size(); ++k)
              all[k] = v[k];
            return all;
          };
          Tensor rm_jf = rm.clone(), rv_jf = rv.clone(), rm_jc = rm.clone(), rv_jc = rv.clone();
          const auto j_f =
              jvp([&](const V& v) { return V{fused(pad(v), rm_jf, rv_jf)}; }, primals, tans);
          const auto j_c =
              jvp([&](const V& v) { return V{composed(pad(v), rm_jc, rv_jc)}; }, primals, tans);
          CHECK(j_f.tangents[0].to_doubles() == j_c.tangents[0].to_doubles());
        }
}

TEST_CASE("batch_norm with relu keeps no pre-activation for the backward", "[batch_norm]") {
  // The composition's relu holds its input (the batch norm's output) until the backward; the
  // fused op holds only what batch norm keeps anyway (x and per-channel statistics).
  Generator gen(27);
  const Tensor x = random_tensor({8, 16, 16, 16}, gen).set_requires_grad(true);
  const Tensor w = random_tensor({16}, gen).set_requires_grad(true);
  const Tensor b = random_tensor({16}, gen).set_requires_grad(true);
  const std::int64_t fused =
      live_bytes_after([&] { return batch_norm(x, w, b, {}, {}, with_relu(train_mode())); });
  const std::int64_t composed =
      live_bytes_after([&] { return relu(batch_norm(x, w, b, {}, {}, train_mode())); });
  const auto activation = static_cast<std::int64_t>(x.numel() * sizeof(double));
  CHECK(composed - fused >= activation);
  CHECK(fused < 2 * activation);  // the output, plus per-channel statistics
}

TEST_CASE("batch_norm forward matches a naive reference", "[batch_norm]") {
  Generator gen(23);
  // S = 10 (row sweeps) and S = 40 (per-channel loops).
  for (const Shape& shape : {Shape{4, 3, 2, 5}, Shape{2, 3, 5, 8}}) {
    const std::int64_t n = shape[0], s = shape[2] * shape[3];
    const Tensor x = random_tensor(shape, gen, -3.0, 5.0);
    const Tensor w = random_tensor({3}, gen, 0.5, 1.5), b = random_tensor({3}, gen);
    std::vector<double> mean, var;
    naive_stats(x.to_doubles(), n, 3, s, mean, var);
    check_close(
        batch_norm(x, w, b, {}, {}, train_mode()).to_doubles(),
        naive_batch_norm(x.to_doubles(), n, 3, s, mean, var, w.to_doubles(), b.to_doubles(), 1e-5),
        1e-12, 1e-12, "train");
    const Tensor rm = random_tensor({3}, gen), rv = random_tensor({3}, gen, 0.5, 2.0);
    check_close(
        batch_norm(x, {}, {}, rm, rv, eval_mode()).to_doubles(),
        naive_batch_norm(x.to_doubles(), n, 3, s, rm.to_doubles(), rv.to_doubles(), {}, {}, 1e-5),
        1e-12, 1e-12, "eval");
    // Statistics stay accurate when the mean is far larger than the spread.
    const Tensor shifted = add(x, 1e6);
    check_close(batch_norm(shifted, w, b, {}, {}, train_mode()).to_doubles(),
                batch_norm(x, w, b, {}, {}, train_mode()).to_doubles(), 1e-8, 1e-8, "shifted");
  }
}

TEST_CASE("batch_norm matches a composition of generic ops on large inputs", "[batch_norm]") {
  // Large enough for the parallel loops of both loop orders (per channel and row sweeps).
  Generator gen(24);
  for (const Shape& shape : {Shape{40, 8, 8, 8}, Shape{64, 600}}) {
    const std::int64_t c = shape[1];
    Shape bshape(shape.size(), 1), dims{0};
    bshape[1] = c;
    for (std::size_t i = 2; i < shape.size(); ++i)
      dims.push_back(static_cast<std::int64_t>(i));
    auto reference = [&](const V& v) {
      const Tensor m = mean(v[0], dims, true);
      const Tensor xc = sub(v[0], m);
      const Tensor var = mean(mul(xc, xc), dims, true);
      return add(mul(div(xc, sqrt(add(var, 1e-5))), v[1].reshape(bshape)), v[2].reshape(bshape));
    };
    auto op = [](const V& v) { return batch_norm(v[0], v[1], v[2], {}, {}, train_mode()); };
    const V in{random_tensor(shape, gen, -1.0, 3.0), random_tensor({c}, gen, 0.5, 1.5),
               random_tensor({c}, gen)};
    V leaves;
    for (const Tensor& t : in)
      leaves.push_back(t.detach().set_requires_grad(true));
    const Tensor y = op(leaves), y_ref = reference(leaves);
    check_close(y.to_doubles(), y_ref.to_doubles(), 1e-10, 1e-10, "forward");
    const Tensor u = random_tensor(shape, gen);
    const V g = grad({y}, leaves, {u}), g_ref = grad({y_ref}, leaves, {u});
    for (std::size_t k = 0; k < 3; ++k)
      check_close(g[k].to_doubles(), g_ref[k].to_doubles(), 1e-9, 1e-9, "vjp");
    const V tangents{random_tensor(shape, gen), random_tensor({c}, gen), random_tensor({c}, gen)};
    const auto j = jvp([&](const V& v) { return V{op(v)}; }, in, tangents);
    const auto j_ref = jvp([&](const V& v) { return V{reference(v)}; }, in, tangents);
    check_close(j.tangents[0].to_doubles(), j_ref.tangents[0].to_doubles(), 1e-9, 1e-9, "jvp");
  }
}

TEST_CASE("batch_norm running statistics follow PyTorch over two steps", "[batch_norm]") {
  for (DType dt : {DType::Float64, DType::Float32}) {
    Tensor rm = Tensor::zeros({2}, dt), rv = Tensor::ones({2}, dt);
    // Step 1, (N, C) = (2, 2): channel 0 {1, 3}: mean 2, biased var 1, unbiased 2;
    // channel 1 {2, 6}: mean 4, biased var 4, unbiased 8.
    const Tensor x1 = Tensor::from_doubles({1, 2, 3, 6}, {2, 2}, dt);
    const Tensor y1 = batch_norm(x1, {}, {}, rm, rv, train_mode());
    check_close(rm.to_doubles(), {0.2, 0.4}, 1e-7, 1e-7, "step 1 mean");
    check_close(rv.to_doubles(), {0.9 + 0.1 * 2, 0.9 + 0.1 * 8}, 1e-7, 1e-7, "step 1 var");
    check_close(y1.to_doubles(),
                {-1 / std::sqrt(1 + 1e-5), -2 / std::sqrt(4 + 1e-5), 1 / std::sqrt(1 + 1e-5),
                 2 / std::sqrt(4 + 1e-5)},
                1e-6, 1e-6, "step 1 output");
    // Step 2, (N, C, H, W) = (2, 2, 1, 2), M = 4: channel 0 {1, 3, 5, 7}: mean 4, biased var 5,
    // unbiased 20/3; channel 1 {2, 2, 2, 6}: mean 3, biased var 3, unbiased 4.
    const Tensor x2 = Tensor::from_doubles({1, 3, 2, 2, 5, 7, 2, 6}, {2, 2, 1, 2}, dt);
    const Tensor y2 = batch_norm(x2, {}, {}, rm, rv, train_mode());
    check_close(rm.to_doubles(), {0.9 * 0.2 + 0.1 * 4, 0.9 * 0.4 + 0.1 * 3}, 1e-7, 1e-7,
                "step 2 mean");
    check_close(rv.to_doubles(), {0.9 * 1.1 + 0.1 * 20.0 / 3.0, 0.9 * 1.7 + 0.1 * 4}, 1e-6, 1e-6,
                "step 2 var");
    // The output normalises with the biased batch variance, not the running statistics.
    CHECK(y2.to_doubles()[0] == Approx(-3 / std::sqrt(5 + 1e-5)).epsilon(1e-6));
    CHECK(y2.to_doubles()[7] == Approx(3 / std::sqrt(3 + 1e-5)).epsilon(1e-6));
    // Eval mode reads the running statistics and leaves them alone.
    const Tensor ye = batch_norm(x2, {}, {}, rm, rv, eval_mode());
    CHECK(ye.to_doubles()[0] ==
          Approx((1 - 0.58) / std::sqrt(0.99 + 2.0 / 3.0 + 1e-5)).epsilon(1e-6));
    check_close(rm.to_doubles(), {0.58, 0.66}, 1e-7, 1e-7, "eval leaves mean");
  }
}

TEST_CASE("batch_norm rejects bad arguments with clear messages", "[batch_norm]") {
  const Tensor x = Tensor::zeros({2, 3, 4}, DType::Float64);
  REQUIRE_THROWS_WITH(
      batch_norm(x, Tensor::ones({4}, DType::Float64), {}, {}, {}, train_mode()),
      Catch::Contains("weight") && Catch::Contains("[3]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(batch_norm(x, {}, {}, {}, {}, eval_mode()), Catch::Contains("running_mean"));
  REQUIRE_THROWS_WITH(
      batch_norm(Tensor::zeros({1, 3}, DType::Float64), {}, {}, {}, {}, train_mode()),
      Catch::Contains("more than one value per channel"));
  REQUIRE_THROWS_WITH(batch_norm(Tensor::zeros({3}, DType::Float64), {}, {}, {}, {}, train_mode()),
                      Catch::Contains("(N, C, ...)"));
}

// ---------------------------------------------------------------- softmax family

TEST_CASE("softmax and log_softmax gradients along the last and a middle dim", "[grad][softmax]") {
  Generator gen(31);
  for (double tau : {1.0, 2.5}) {
    const Tensor x2 = random_tensor({3, 5}, gen, -3.0, 3.0);
    const Tensor x3 = random_tensor({2, 4, 3}, gen, -3.0, 3.0);
    const Tensor xt = random_tensor({3, 4, 2}, gen, -3.0, 3.0).transpose(0, 2);  // (2, 4, 3)
    for (const auto& [name, fn] :
         std::vector<std::pair<std::string, std::function<Tensor(const Tensor&, std::int64_t)>>>{
             {"softmax", [tau](const Tensor&x, std::int64_t d) { return softmax(x, d, tau); }},
             {"log_softmax",
              [tau](const Tensor&x, std::int64_t d) { return log_softmax(x, d, tau); }}}) {
      const std::string tag = name + " tau " + std::to_string(tau);
      check_gradients(tag + " last", [&](const V& v) { return fn(v[0], -1); }, {x2});
      check_gradients(tag + " middle", [&](const V& v) { return fn(v[0], 1); }, {x3});
      check_gradients(tag + " middle noncontig", [&](const V& v) { return fn(v[0], 1); }, {xt});
      check_gradients(tag + " first", [&](const V& v) { return fn(v[0], 0); }, {x3});
    }
  }
}

TEST_CASE("softmax forward matches a naive reference and is stable at 1e4", "[softmax]") {
  Generator gen(32);
  const Tensor x = random_tensor({2, 5, 3}, gen, -4.0, 4.0);
  const auto xv = x.to_doubles();
  const auto y = softmax(x, 1, 2.5).to_doubles(), ly = log_softmax(x, 1, 2.5).to_doubles();
  for (std::int64_t o = 0; o < 2; ++o)
    for (std::int64_t i = 0; i < 3; ++i) {
      std::vector<double> lane;
      for (std::int64_t r = 0; r < 5; ++r)
        lane.push_back(xv[(o * 5 + r) * 3 + i]);
      const auto p = naive_softmax(lane, 2.5);
      for (std::int64_t r = 0; r < 5; ++r) {
        CHECK(y[(o * 5 + r) * 3 + i] == Approx(p[r]).epsilon(1e-12));
        CHECK(ly[(o * 5 + r) * 3 + i] == Approx(std::log(p[r])).epsilon(1e-12));
      }
    }

  // softmax is shift-invariant: logits near 1e4 must give the softmax of the small offsets.
  const std::vector<double> offsets{0, -1, 2, -3.5};
  std::vector<double> big;
  for (double d : offsets)
    big.push_back(1e4 + d);
  big.push_back(-1e4);
  for (DType dt : {DType::Float64, DType::Float32}) {
    const Tensor zb = Tensor::from_doubles(big, {1, 5}, dt);
    const auto p = softmax(zb, -1, 2.0).to_doubles(), lp = log_softmax(zb, -1, 2.0).to_doubles();
    auto want = naive_softmax(offsets, 2.0);
    want.push_back(0.0);
    check_close(p, want, 1e-6, 1e-6, "softmax 1e4");
    for (std::size_t c = 0; c < offsets.size(); ++c)
      CHECK(lp[c] == Approx(std::log(want[c])).epsilon(1e-6));
    // log_softmax of the far logit: -1e4 / tau - lse(z / tau), finite.
    double sum = 0;
    for (double d : offsets)
      sum += std::exp(d / 2.0);
    CHECK(lp[4] == Approx(-1e4 - std::log(sum)).epsilon(1e-6));
  }
}

TEST_CASE("cross_entropy gradients, values, large logits and label errors", "[grad][softmax]") {
  Generator gen(33);
  const Tensor z = random_tensor({4, 5}, gen, -3.0, 3.0);
  const Tensor y = labels_of({0, 4, 2, 2});
  check_gradients("cross_entropy", [](const V& v) { return cross_entropy(v[0], v[1]); }, {z, y});
  check_gradients("cross_entropy noncontig",
                  [](const V& v) { return cross_entropy(v[0].transpose(0, 1), v[1]); },
                  {random_tensor({5, 4}, gen, -3.0, 3.0), y});

  const auto ce = cross_entropy(z, y).to_doubles();
  const auto zv = z.to_doubles();
  const std::vector<std::int64_t> yv{0, 4, 2, 2};
  for (std::int64_t i = 0; i < 4; ++i)
    CHECK(ce[i] == Approx(-std::log(naive_softmax(row(zv, i, 5), 1.0)[yv[i]])).epsilon(1e-12));

  // Logits of magnitude 1e4: the loss is that of the offsets, gradients are finite.
  const std::vector<double> offsets{0.5, -1, 2, 0};
  for (DType dt : {DType::Float64, DType::Float32}) {
    std::vector<double> big;
    for (double d : offsets)
      big.push_back(1e4 + d);
    big.push_back(-1e4);
    Tensor zb = Tensor::from_doubles(big, {1, 5}, dt).set_requires_grad(true);
    const Tensor loss = cross_entropy(zb, labels_of({1}));
    auto p = naive_softmax(offsets, 1.0);
    CHECK(loss.item() == Approx(-std::log(p[1])).epsilon(1e-5));
    const auto g = grad({loss}, {zb}, {Tensor::ones({1}, dt)})[0].to_doubles();
    p.push_back(0.0);
    p[1] -= 1.0;
    check_close(g, p, 1e-6, 1e-5, "cross_entropy 1e4 grad");
  }

  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({0, 1, 5, 2})),
                      Catch::Contains("cross_entropy") && Catch::Contains("label 5") &&
                          Catch::Contains("row 2") && Catch::Contains("[0, 5)"));
  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({-1, 1, 0, 2})),
                      Catch::Contains("label -1") && Catch::Contains("row 0"));
  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({0, 1})), Catch::Contains("labels"));
}

TEST_CASE("kl_div_softmax gradients in both arguments, values and underflow", "[grad][softmax]") {
  Generator gen(34);
  for (double tau : {2.0, 0.7}) {
    const std::string tag = "kl tau " + std::to_string(tau);
    check_gradients(tag, [tau](const V& v) { return kl_div_softmax(v[0], v[1], tau); },
                    {random_tensor({3, 6}, gen, -3.0, 3.0), random_tensor({3, 6}, gen, -3.0, 3.0)});
    check_gradients(tag + " noncontig",
                    [tau](const V& v) { return kl_div_softmax(v[0], v[1], tau); },
                    {random_tensor({4, 2}, gen, -3.0, 3.0).transpose(0, 1),
                     random_tensor({2, 4}, gen, -3.0, 3.0)});
  }
  // Student only and target only.
  const Tensor s = random_tensor({2, 5}, gen, -2.0, 2.0), t = random_tensor({2, 5}, gen, -2.0, 2.0);
  check_gradients("kl student only", [t](const V& v) { return kl_div_softmax(v[0], t, 2.0); }, {s});
  check_gradients("kl target only", [s](const V& v) { return kl_div_softmax(s, v[0], 2.0); }, {t});

  const auto kl = kl_div_softmax(s, t, 2.0).to_doubles();
  for (std::int64_t i = 0; i < 2; ++i)
    CHECK(
        kl[i] ==
        Approx(naive_kl(row(s.to_doubles(), i, 5), row(t.to_doubles(), i, 5), 2.0)).epsilon(1e-12));

  for (DType dt : {DType::Float64, DType::Float32}) {
    // Shift invariance at 1e4, different shifts for student and target.
    const std::vector<double> so{0.5, -1, 2}, to{1, 0, -0.5};
    std::vector<double> sb, tb;
    for (std::size_t c = 0; c < 3; ++c)
      sb.push_back(1e4 + so[c]), tb.push_back(-1e4 + to[c]);
    Tensor sbt = Tensor::from_doubles(sb, {1, 3}, dt).set_requires_grad(true);
    Tensor tbt = Tensor::from_doubles(tb, {1, 3}, dt).set_requires_grad(true);
    const Tensor klb = kl_div_softmax(sbt, tbt, 2.0);
    CHECK(klb.item() == Approx(naive_kl(so, to, 2.0)).epsilon(1e-5));
    for (const Tensor& g : grad({klb}, {sbt, tbt}, {Tensor::ones({1}, dt)}))
      for (double e : g.to_doubles())
        CHECK(std::isfinite(e));

    // A target probability that underflows to 0 contributes 0, not NaN: KL = log 2.
    const Tensor s0 = Tensor::from_doubles({0, 0}, {1, 2}, dt);
    const Tensor t0 = Tensor::from_doubles({0, -1e4}, {1, 2}, dt);
    CHECK(kl_div_softmax(s0, t0, 2.0).item() == Approx(std::log(2.0)).epsilon(1e-6));
    // A student probability of e^-5000: KL = 0.5 (log 0.5 - 0) + 0.5 (log 0.5 + 5000).
    CHECK(kl_div_softmax(t0, s0, 2.0).item() == Approx(2500 - std::log(2.0)).epsilon(1e-6));
  }
  REQUIRE_THROWS_WITH(
      kl_div_softmax(s, random_tensor({2, 4}, gen), 2.0),
      Catch::Contains("kl_div_softmax") && Catch::Contains("[2, 5]") && Catch::Contains("[2, 4]"));
  REQUIRE_THROWS_WITH(kl_div_softmax(s, t, 0.0), Catch::Contains("tau"));
}

// ---------------------------------------------------------------- dropout

TEST_CASE("dropout masks, scales, and differentiates through the same mask", "[grad][dropout]") {
  Generator gen(41);
  const Tensor x = random_tensor({4, 6}, gen);
  check_gradients("dropout",
                  [](const V& v) {
                    Generator g(1234);
                    return dropout(v[0], 0.3, true, g);
                  },
                  {x});
  check_gradients("dropout noncontig",
                  [](const V& v) {
                    Generator g(99);
                    return dropout(v[0], 0.5, true, g);
                  },
                  {random_tensor({5, 3}, gen).transpose(0, 1)});

  // The mask is drawn from the generator in row-major order: uniform() < p drops.
  const double p = 0.25;
  Generator g1(7), g2(7);
  const auto y = dropout(x, p, true, g1).to_doubles();
  const auto xv = x.to_doubles();
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const double want = g2.uniform() < p ? 0.0 : xv[i] / (1 - p);
    CHECK(y[i] == Approx(want).epsilon(1e-15));
  }

  // Drop rate over many elements.
  const Tensor ones = Tensor::ones({100000}, DType::Float32);
  Generator g3(5);
  const auto big = dropout(ones, 0.4, true, g3).to_doubles();
  std::size_t zeros = 0;
  for (double e : big) {
    CHECK((e == 0.0 || e == Approx(1.0 / 0.6).epsilon(1e-6)));
    zeros += e == 0.0;
  }
  CHECK(static_cast<double>(zeros) / big.size() == Approx(0.4).margin(0.01));

  // Identity in eval mode or with p = 0, and it consumes no randomness there.
  Generator g4(3);
  CHECK(dropout(x, 0.5, false, g4).to_doubles() == xv);
  CHECK(dropout(x, 0.0, true, g4).to_doubles() == xv);
  CHECK(g4.state() == Generator(3).state());
  REQUIRE_THROWS_WITH(dropout(x, 1.0, true, g4),
                      Catch::Contains("dropout") && Catch::Contains("[0, 1)"));
  REQUIRE_THROWS_WITH(dropout(x, -0.1, true, g4), Catch::Contains("dropout"));
}

// ---------------------------------------------------------------- float32

TEST_CASE("float32 agrees with float64", "[float32]") {
  Generator gen(51);
  const Tensor rm = random_tensor({8}, gen), rv = random_tensor({8}, gen, 0.5, 2.0);
  check_float32_matches(
      "bn_train", [](const V& v) { return batch_norm(v[0], v[1], v[2], {}, {}, train_mode()); },
      {random_tensor({16, 8, 6, 6}, gen, -2.0, 4.0), random_tensor({8}, gen, 0.5, 1.5),
       random_tensor({8}, gen)});
  check_float32_matches("bn_eval",
                        [rm, rv](const V& v) {
                          return batch_norm(v[0], v[1], v[2], rm.to(v[0].dtype()),
                                            rv.to(v[0].dtype()), eval_mode());
                        },
                        {random_tensor({4, 8, 3, 3}, gen), random_tensor({8}, gen, 0.5, 1.5),
                         random_tensor({8}, gen)});
  check_float32_matches("bn_train_2d",
                        [](const V& v) { return batch_norm(v[0], {}, {}, {}, {}, train_mode()); },
                        {random_tensor({64, 8}, gen)});
  check_float32_matches("softmax_mid", [](const V& v) { return softmax(v[0], 1, 2.5); },
                        {random_tensor({4, 10, 3}, gen, -5.0, 5.0)});
  check_float32_matches("log_softmax_last", [](const V& v) { return log_softmax(v[0], -1, 2.0); },
                        {random_tensor({6, 100}, gen, -5.0, 5.0)});
  check_float32_matches("cross_entropy", [](const V& v) { return cross_entropy(v[0], v[1]); },
                        {random_tensor({4, 7}, gen, -5.0, 5.0), labels_of({6, 0, 3, 3})});
  check_float32_matches(
      "kl_div_softmax", [](const V& v) { return kl_div_softmax(v[0], v[1], 2.0); },
      {random_tensor({5, 100}, gen, -5.0, 5.0), random_tensor({5, 100}, gen, -5.0, 5.0)});
  check_float32_matches("dropout",
                        [](const V& v) {
                          Generator g(17);
                          return dropout(v[0], 0.2, true, g);
                        },
                        {random_tensor({3, 9}, gen)});
}
