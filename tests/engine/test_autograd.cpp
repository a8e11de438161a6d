// The tape: accumulation into .grad, grad() leaving .grad alone, no-grad, jvp and DualScope.
#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>

using namespace mcd;

TEST_CASE("backward accumulates into leaf gradients", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3});
  x.set_requires_grad(true);
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  y.backward();
  CHECK(x.grad().to_doubles() == std::vector<double>{2, 4, 6});
  sum(x).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>{3, 5, 7});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("grad() returns gradients without touching .grad", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2});
  x.set_requires_grad(true);
  Tensor h = exp(x);
  Tensor y = sum(mul(h, x));
  auto g = grad({y}, {x, h});
  CHECK_FALSE(x.grad().defined());
  // d/dx sum(e^x x) = e^x (1 + x); d/dh = x
  CHECK(g[0].to_doubles()[0] == Approx(std::exp(1.0) * 2));
  CHECK(g[1].to_doubles() == std::vector<double>{1, 2});
}

TEST_CASE("no-grad guard stops recording", "[autograd]") {
  Tensor x = Tensor::ones({2}, DType::Float64);
  x.set_requires_grad(true);
  {
    NoGradGuard ng;
    Tensor y = mul(x, 2.0);
    CHECK_FALSE(y.requires_grad());
  }
  CHECK(mul(x, 2.0).requires_grad());
  REQUIRE_THROWS_WITH(Tensor::ones({2}).backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("jvp and DualScope propagate tangents", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({0.5, -1}, {2});
  Tensor v = Tensor::from_vector<double>({1, 2}, {2});
  auto r =
      jvp([](const std::vector<Tensor>& in) { return std::vector<Tensor>{exp(in[0])}; }, {x}, {v});
  CHECK(r.tangents[0].to_doubles()[1] == Approx(2 * std::exp(-1.0)));
  CHECK_FALSE(x.tangent().defined());
  {
    DualScope scope({x}, {v});
    Tensor y = sum(mul(x, x));
    CHECK(y.tangent().item() == Approx(2 * (0.5 * 1 + -1 * 2)));
  }
  CHECK_FALSE(x.tangent().defined());
}
