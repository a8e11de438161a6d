// Tensor metadata, views, broadcasting errors and in-place updates.
#include <catch2/catch.hpp>

#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/tensor.h>

using namespace mcd;

TEST_CASE("views share storage and respect strides", "[tensor]") {
  Tensor t = Tensor::arange(24, DType::Float64).reshape({2, 3, 4});
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK(t.is_contiguous());
  Tensor p = t.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK_FALSE(p.is_contiguous());
  CHECK(p.shares_storage_with(t));
  CHECK(p.contiguous().to_doubles()[1] == 4.0);  // p[0,0,1] = t[0,1,0]
  Tensor s = t.slice(2, 1, 4, 2);                // columns 1 and 3
  CHECK(s.shape() == Shape{2, 3, 2});
  CHECK(s.contiguous().to_doubles() ==
        std::vector<double>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
  Tensor e = Tensor::arange(3, DType::Float64).reshape({3, 1}).expand({3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(sum(e).item() == 12.0);
  CHECK(t.transpose(0, 2).shape() == Shape{4, 3, 2});
  CHECK(t.flatten(1).shape() == Shape{2, 12});
  CHECK(t.reshape({-1, 4}).shape() == Shape{6, 4});
  CHECK(t.unsqueeze(0).squeeze(0).shape() == t.shape());
}

TEST_CASE("shape and dtype errors name the op and both shapes", "[tensor]") {
  Tensor a = Tensor::zeros({2, 3});
  Tensor b = Tensor::zeros({4, 3});
  REQUIRE_THROWS_WITH(
      add(a, b), Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4, 3]"));
  Tensor c = Tensor::zeros({2, 3}, DType::Float64);
  REQUIRE_THROWS_WITH(mul(a, c), Catch::Contains("mul") && Catch::Contains("float32") &&
                                     Catch::Contains("float64"));
  REQUIRE_THROWS_WITH(a.reshape({5}), Catch::Contains("reshape"));
}

TEST_CASE("in-place updates and conversions", "[tensor]") {
  Tensor a = Tensor::ones({2, 2}, DType::Float64);
  a.add_(Tensor::full({2}, 2.0, DType::Float64), 0.5);
  CHECK(a.to_doubles() == std::vector<double>{2, 2, 2, 2});
  a.mul_(3);
  CHECK(a.to(DType::Float32).to_doubles()[3] == 6.0);
  Tensor v = a.transpose(0, 1);
  v.fill_(1.0);
  CHECK(sum(a).item() == 4.0);
  CHECK(Tensor::scalar(2.5).item() == 2.5);
  CHECK(a.str().find("shape=[2, 2]") != std::string::npos);
}
