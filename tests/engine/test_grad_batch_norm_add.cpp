// batch_norm_add: batch norm with a residual added (and a ReLU) in one op, the end of a ResNet
// block. Float64 gradient checks in every input (VJP, JVP, <u, Jv> = <J^T u, v>); bit-for-bit
// equality with relu(batch_norm(x) + r) and batch_norm(x) + r in values, running statistics,
// VJP and JVP, with any subset of the inputs differentiated; the memory it keeps; its errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <mcd/engine/autograd.h>
#include <mcd/engine/error.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/batch_norm.h>
#include <mcd/engine/ops/elementwise.h>

#include "support/gradcheck.h"
#include "support/live_memory.h"

using namespace mcd;
using mcd::testing::check_gradients;
using mcd::testing::live_bytes_after;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

BatchNormOptions mode(bool training, bool relu) {
  return {training, 0.1, 1e-5, relu};
}

// Inputs (x, r) whose pre-activations batch_norm(x) + r include negative values and none
// within 1e-3 of 0, so central differences never straddle the ReLU's kink.
std::pair<Tensor, Tensor> relu_safe_inputs(const std::function<Tensor()>& draw,
                                           const std::function<Tensor(const Tensor&)>& bn) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    const Tensor x = draw(), r = draw();
    const std::vector<double> pre = add(bn(x), r).to_doubles();
    double nearest = 1e300;
    std::int64_t negative = 0;
    for (const double v : pre) {
      nearest = std::min(nearest, std::abs(v));
      negative += v < 0 ? 1 : 0;
    }
    if (nearest >= 1e-3 && negative > 0 && negative < static_cast<std::int64_t>(pre.size()))
      return {x, r};
  }
  FAIL("no inputs with pre-activations away from 0 in 200 draws");
  return {};
}

}  // namespace

TEST_CASE("batch_norm_add: gradients in every input, training and eval", "[grad][batch_norm]") {
  Generator gen(41);
  const Tensor w = random_tensor({4}, gen, 0.5, 1.5), b = random_tensor({4}, gen, -0.8, 0.8);
  const Tensor rm = random_tensor({4}, gen), rv = random_tensor({4}, gen, 0.5, 2.0);
  // S >= 32 takes the per-channel loops, shorter S the row sweeps; the transposed view of a
  // (C, N, H, W) tensor is non-contiguous.
  struct Case {
    const char* name;
    Shape shape;
    bool transposed;
  };
  const std::vector<Case> cases = {{"4d", {3, 4, 2, 3}, false},
                                   {"4d_noncontig", {4, 3, 3, 2}, true},
                                   {"long_spatial", {2, 4, 8, 5}, false},
                                   {"2d", {6, 4}, false}};
  for (const bool training : {true, false})
    for (const bool relu : {true, false}) {
      const BatchNormOptions o = mode(training, relu);
      const Tensor crm = training ? Tensor() : rm, crv = training ? Tensor() : rv;
      for (const Case& c : cases) {
        const std::string name = std::string("bn_add") + (relu ? "_relu_" : "_") +
                                 (training ? "train_" : "eval_") + c.name;
        const auto draw = [&] {
          const Tensor t = random_tensor(c.shape, gen, -2.0, 2.0);
          return c.transposed ? t.transpose(0, 1) : t;
        };
        const auto [x, r] = relu_safe_inputs(draw, [&](const Tensor& v) {
          return batch_norm(v, w, b, crm, crv, mode(training, false));
        });
        check_gradients(name,
                        [crm, crv, o](const V& v) {
                          return batch_norm_add(v[0], v[1], v[2], crm, crv, v[3], o);
                        },
                        {x, w, b, r});
        const auto [x_plain, r_plain] = relu_safe_inputs(draw, [&](const Tensor& v) {
          return batch_norm(v, {}, {}, crm, crv, mode(training, false));
        });
        check_gradients(
            name + "_plain",
            [crm, crv, o](const V& v) { return batch_norm_add(v[0], {}, {}, crm, crv, v[1], o); },
            {x_plain, r_plain});
      }
    }
}

TEST_CASE("batch_norm_add equals the composition bit for bit", "[batch_norm]") {
  Generator gen(42);
  // Small and large shapes (the parallel loops of both loop orders), float64 and float32,
  // training and eval, with and without the ReLU. Channel 0 of x is constant and its residual
  // 0: in training mode its pre-activations are exactly the bias, 0 for half the cases, where
  // the ReLU's derivative is 0.
  for (const DType dt : {DType::Float64, DType::Float32})
    for (const Shape& shape :
         {Shape{3, 4, 2, 3}, Shape{2, 4, 8, 5}, Shape{40, 8, 8, 8}, Shape{64, 600}, Shape{6, 4}})
      for (const bool training : {true, false})
        for (const bool relu : {true, false})
          for (const bool zero_bias : {false, true}) {
            const std::int64_t c = shape[1];
            INFO(dtype_name(dt) << " " << shape_str(shape) << (training ? " train" : " eval")
                                << (relu ? " relu" : "") << (zero_bias ? " zero bias" : ""));
            Tensor x = random_tensor(shape, gen, -1.0, 3.0);
            x.slice(1, 0, 1).fill_(0.7);
            Tensor r = random_tensor(shape, gen, -1.5, 1.5);
            r.slice(1, 0, 1).fill_(0.0);
            Tensor b = random_tensor({c}, gen, -0.5, 0.5);
            if (zero_bias) b.fill_(0.0);
            const V in{x.to(dt), random_tensor({c}, gen, 0.5, 1.5).to(dt), b.to(dt), r.to(dt)};
            const Tensor rm = random_tensor({c}, gen).to(dt);
            const Tensor rv = random_tensor({c}, gen, 0.5, 2.0).to(dt);
            auto fused = [&](const V& v, Tensor& m, Tensor& var) {
              return batch_norm_add(v[0], v[1], v[2], m, var, v[3], mode(training, relu));
            };
            auto composed = [&](const V& v, Tensor& m, Tensor& var) {
              const Tensor sum =
                  add(batch_norm(v[0], v[1], v[2], m, var, mode(training, false)), v[3]);
              return relu ? mcd::relu(sum) : sum;
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
            if (relu) {
              std::int64_t zeros = 0;
              for (const double v : y_f.to_doubles())
                zeros += v == 0.0 ? 1 : 0;
              CHECK(zeros > 0);  // the ReLU is active somewhere
            }

            // VJP: every input, then subsets, only those requiring gradients (the residual
            // alone takes the kernels' path that writes its gradient without a wanted dx).
            const Tensor u = random_tensor(shape, gen).to(dt);
            for (const std::vector<std::size_t>& wrt :
                 {std::vector<std::size_t>{0, 1, 2, 3}, {3}, {0}, {1, 3}}) {
              V all_f, all_c, sel_f, sel_c;
              for (std::size_t k = 0; k < in.size(); ++k) {
                const bool wanted = std::find(wrt.begin(), wrt.end(), k) != wrt.end();
                all_f.push_back(in[k].detach().set_requires_grad(wanted));
                all_c.push_back(in[k].detach().set_requires_grad(wanted));
                if (!wanted) continue;
                sel_f.push_back(all_f.back());
                sel_c.push_back(all_c.back());
              }
              Tensor m1 = rm.clone(), v1 = rv.clone(), m2 = rm.clone(), v2 = rv.clone();
              const V g_f = grad({fused(all_f, m1, v1)}, sel_f, {u});
              const V g_c = grad({composed(all_c, m2, v2)}, sel_c, {u});
              for (std::size_t k = 0; k < wrt.size(); ++k) {
                INFO("vjp of input " << wrt[k] << " of " << wrt.size());
                CHECK(g_f[k].to_doubles() == g_c[k].to_doubles());
              }
            }

            // JVP with tangents on every input, and on the residual alone.
            const V tangents{random_tensor(shape, gen).to(dt), random_tensor({c}, gen).to(dt),
                             random_tensor({c}, gen).to(dt), random_tensor(shape, gen).to(dt)};
            for (const bool residual_only : {false, true}) {
              INFO((residual_only ? "jvp in the residual" : "jvp in every input"));
              auto with = [&](const V& v) {
                if (!residual_only) return v;
                V all = in;
                all[3] = v[0];
                return all;
              };
              const V primals = residual_only ? V{in[3]} : in;
              const V tans = residual_only ? V{tangents[3]} : tangents;
              Tensor m1 = rm.clone(), v1 = rv.clone(), m2 = rm.clone(), v2 = rv.clone();
              const auto j_f =
                  jvp([&](const V& v) { return V{fused(with(v), m1, v1)}; }, primals, tans);
              const auto j_c =
                  jvp([&](const V& v) { return V{composed(with(v), m2, v2)}; }, primals, tans);
              CHECK(j_f.tangents[0].to_doubles() == j_c.tangents[0].to_doubles());
            }
          }
}

TEST_CASE("batch_norm_add with relu keeps no pre-activation for the backward", "[batch_norm]") {
  // The composition's relu holds its input (the sum) until the backward; the fused op holds
  // what batch norm keeps anyway (x and per-channel statistics) and the residual, which in a
  // ResNet block is the block's input, alive anyway.
  Generator gen(43);
  const Tensor x = random_tensor({8, 16, 16, 16}, gen).set_requires_grad(true);
  const Tensor r = random_tensor({8, 16, 16, 16}, gen).set_requires_grad(true);
  const Tensor w = random_tensor({16}, gen).set_requires_grad(true);
  const Tensor b = random_tensor({16}, gen).set_requires_grad(true);
  const std::int64_t fused =
      live_bytes_after([&] { return batch_norm_add(x, w, b, {}, {}, r, mode(true, true)); });
  const std::int64_t composed = live_bytes_after(
      [&] { return relu(add(batch_norm(x, w, b, {}, {}, mode(true, false)), r)); });
  const auto activation = static_cast<std::int64_t>(x.numel() * sizeof(double));
  CHECK(composed - fused >= activation);
  CHECK(fused < 2 * activation);  // the output, plus per-channel statistics
}

TEST_CASE("batch_norm_add rejects a residual that does not match the input", "[batch_norm]") {
  Generator gen(44);
  const Tensor x = random_tensor({2, 3, 4, 4}, gen);
  const BatchNormOptions o = mode(true, true);
  CHECK_THROWS_WITH(batch_norm_add(x, {}, {}, {}, {}, random_tensor({2, 3, 4, 5}, gen), o),
                    Catch::Contains("batch_norm_add") && Catch::Contains("[2, 3, 4, 4]") &&
                        Catch::Contains("[2, 3, 4, 5]"));
  CHECK_THROWS_WITH(batch_norm_add(x, {}, {}, {}, {}, x.to(DType::Float32), o),
                    Catch::Contains("batch_norm_add") && Catch::Contains("float32"));
  CHECK_THROWS_WITH(batch_norm_add(x, {}, {}, {}, {}, Tensor(), o),
                    Catch::Contains("batch_norm_add"));
}
