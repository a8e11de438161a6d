// Float64 gradient checks (VJP, JVP, and <u, Jv> = <J^T u, v>) of elementwise ops,
// reductions, matmul, linear, views and concat, with broadcasting and non-contiguous inputs.
#include <catch2/catch.hpp>

#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/linalg.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/shape_ops.h>

#include "support/gradcheck.h"

using namespace mcd;
using mcd::testing::check_gradients;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

TEST_CASE("binary ops with broadcasting", "[grad]") {
  Generator gen(7);
  Tensor a = random_tensor({3, 1, 4}, gen), b = random_tensor({5, 1}, gen, 0.5, 2.0);
  check_gradients("add", [](const V& v) { return add(v[0], v[1]); }, {a, b});
  check_gradients("sub", [](const V& v) { return sub(v[0], v[1]); }, {a, b});
  check_gradients("mul", [](const V& v) { return mul(v[0], v[1]); }, {a, b});
  check_gradients("div", [](const V& v) { return div(v[0], v[1]); }, {a, b});
  Tensor pos = random_tensor({3, 4}, gen, 0.5, 2.0), e = random_tensor({4}, gen);
  check_gradients("pow_tensor", [](const V& v) { return pow(v[0], v[1]); }, {pos, e});
}

TEST_CASE("unary ops on non-contiguous inputs", "[grad]") {
  Generator gen(8);
  Tensor base = random_tensor({4, 6}, gen, -2.0, 2.0);
  Tensor x = base.transpose(0, 1);  // non-contiguous view
  Tensor pos = random_tensor({6, 4}, gen, 0.2, 3.0).transpose(0, 1);
  check_gradients("exp", [](const V& v) { return exp(v[0]); }, {x});
  check_gradients("log", [](const V& v) { return log(v[0]); }, {pos});
  check_gradients("sqrt", [](const V& v) { return sqrt(v[0]); }, {pos});
  check_gradients("pow", [](const V& v) { return pow(v[0], 3.0); }, {x});
  check_gradients("pow_frac", [](const V& v) { return pow(v[0], -1.5); }, {pos});
  check_gradients("sigmoid", [](const V& v) { return sigmoid(v[0]); }, {x});
  check_gradients("softplus", [](const V& v) { return softplus(v[0]); }, {x});
  check_gradients("neg_scalar", [](const V& v) { return add(mul(neg(v[0]), 2.5), 1.0); }, {x});
  // relu away from its kink
  Tensor r = random_tensor({5, 3}, gen, 0.1, 1.0);
  r.slice(0, 0, 2).mul_(-1.0);
  check_gradients("relu", [](const V& v) { return relu(v[0]); }, {r});
}

TEST_CASE("reductions", "[grad]") {
  Generator gen(9);
  Tensor x = random_tensor({3, 4, 5}, gen);
  check_gradients("sum_all", [](const V& v) { return sum(v[0]); }, {x});
  check_gradients("sum_dim1", [](const V& v) { return sum(v[0], {1}); }, {x});
  check_gradients("sum_dims02_keep", [](const V& v) { return sum(v[0], {0, 2}, true); }, {x});
  check_gradients("mean_last", [](const V& v) { return mean(v[0], {-1}); }, {x});
  check_gradients("mean_all", [](const V& v) { return mean(v[0]); }, {x.permute({2, 0, 1})});
}

TEST_CASE("matmul and linear", "[grad]") {
  Generator gen(10);
  Tensor a = random_tensor({3, 4}, gen), b = random_tensor({4, 5}, gen);
  check_gradients("matmul", [](const V& v) { return matmul(v[0], v[1]); }, {a, b});
  check_gradients(
      "matmul_transposed", [](const V& v) { return matmul(v[0], v[1]); },
      {random_tensor({4, 3}, gen).transpose(0, 1), random_tensor({5, 4}, gen).transpose(0, 1)});
  check_gradients("matmul_batched", [](const V& v) { return matmul(v[0], v[1]); },
                  {random_tensor({2, 3, 4}, gen), random_tensor({4, 2}, gen)});
  Tensor x = random_tensor({6, 4}, gen), w = random_tensor({3, 4}, gen),
         bias = random_tensor({3}, gen);
  check_gradients("linear", [](const V& v) { return linear(v[0], v[1], v[2]); }, {x, w, bias});
}

TEST_CASE("views and concat", "[grad]") {
  Generator gen(11);
  Tensor x = random_tensor({2, 3, 4}, gen);
  check_gradients("permute", [](const V& v) { return mul(v[0].permute({1, 2, 0}), 2.0); }, {x});
  check_gradients("slice", [](const V& v) { return v[0].slice(2, 1, 4, 2); }, {x});
  check_gradients("expand", [](const V& v) { return v[0].slice(1, 0, 1).expand({2, 5, 4}); }, {x});
  check_gradients("reshape", [](const V& v) { return v[0].transpose(0, 2).reshape({4, 6}); }, {x});
  check_gradients("concat",
                  [](const V& v) {
                    return concat({v[0], v[1], v[0]}, 1);
                  },
                  {x, random_tensor({2, 2, 4}, gen)});
}
