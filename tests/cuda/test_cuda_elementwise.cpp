// CPU/CUDA parity of the elementwise family, part one: copies (any strides, broadcasting,
// dtype conversion, between devices), fills and the in-place updates, the conversions built
// on them, elementwise maps with broadcasting and strided operands, concat and dropout.
// Forward, VJP and JVP are compared against the CPU in float32 and float64.
#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include <mcd/engine/ops/dropout.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/shape_ops.h>

#include "cuda/test_cuda_elementwise_parity.h"

using namespace mcd;
using mcd::testing::check_op_parity;
using mcd::testing::on_cuda;
using mcd::testing::poison_device_memory;
using mcd::testing::random_uniform;
using mcd::testing::require_parity;

namespace {
const DType kDtypes[] = {DType::Float32, DType::Float64};
}  // namespace

TEST_CASE("CUDA copy_: strided, broadcast and converting copies", "[cuda][elementwise]") {
  REQUIRE(kernels::cuda::install_cuda_backend());
  Generator gen(11);
  for (DType dt : kDtypes) {
    const double rtol = testing::rtol_of(dt);
    const Tensor x = random_uniform({13, 37}, gen, dt, -3.0, 3.0);
    const Tensor xd = on_cuda(x);
    poison_device_memory();
    // Into a transposed view, from a slice with a step, from a broadcast row.
    Tensor dst_cpu = Tensor::zeros({37, 13}, dt),
           dst_cuda = Tensor::zeros({37, 13}, dt, Device::cuda());
    dst_cpu.transpose(0, 1).copy_(x);
    dst_cuda.transpose(0, 1).copy_(xd);
    require_parity("copy_ into a transposed view", dst_cuda, dst_cpu, 0.0);
    dst_cpu.slice(0, 2, 30, 3).copy_(x.slice(1, 1, 11).transpose(0, 1));
    dst_cuda.slice(0, 2, 30, 3).copy_(xd.slice(1, 1, 11).transpose(0, 1));
    require_parity("copy_ between strided views", dst_cuda, dst_cpu, 0.0);
    dst_cpu.copy_(x.slice(0, 4, 5).slice(1, 0, 13));  // (1, 13) broadcast over 37 rows
    dst_cuda.copy_(xd.slice(0, 4, 5).slice(1, 0, 13));
    require_parity("copy_ from a broadcast row", dst_cuda, dst_cpu, 0.0);
    // Conversions through to(DType), from strided views, and back.
    for (DType target : {DType::Float32, DType::Float64, DType::Int64}) {
      require_parity("to(dtype) of a transposed view", xd.transpose(0, 1).to(target),
                     x.transpose(0, 1).to(target), 0.0);
      require_parity("to(dtype) and back", xd.to(target).to(dt), x.to(target).to(dt), 0.0);
    }
    // contiguous() and clone() of views, with their gradients and tangents.
    check_op_parity(
        "contiguous", [](const auto& v) { return v[0].transpose(0, 1).contiguous(); }, {x}, gen);
    check_op_parity(
        "clone", [](const auto& v) { return v[0].slice(1, 3, 30, 2).clone(); }, {x}, gen);
    check_op_parity(
        "to(dtype)",
        [dt](const auto& v) {
          return v[0].to(dt == DType::Float32 ? DType::Float64 : DType::Float32).to(dt);
        },
        {x}, gen);
    check_op_parity(
        "reshape of a view", [](const auto& v) { return v[0].transpose(0, 1).reshape({-1}); }, {x},
        gen);
    check_op_parity(
        "slice", [](const auto& v) { return mul(v[0].slice(0, 1, 12, 2), 1.5); }, {x}, gen);
    (void)rtol;
  }
}

TEST_CASE("CUDA copy_ between devices and of empty tensors", "[cuda][elementwise]") {
  REQUIRE(kernels::cuda::install_cuda_backend());
  Generator gen(12);
  const Tensor x = random_uniform({9, 21}, gen, DType::Float32);
  Tensor d = Tensor::zeros({21, 9}, DType::Float32, Device::cuda());
  d.copy_(x.transpose(0, 1));  // host source, device destination
  require_parity("copy_ from the host", d, x.transpose(0, 1).contiguous(), 0.0);
  Tensor h = Tensor::zeros({9, 21}, DType::Float64);
  h.copy_(d.transpose(0, 1));  // device source, host destination, converting
  CHECK(h.to_doubles() == x.to(DType::Float64).to_doubles());
  Tensor e = Tensor::empty({0, 5}, DType::Float32, Device::cuda());
  CHECK_NOTHROW(e.copy_(Tensor::empty({0, 5}, DType::Float32, Device::cuda())));
  CHECK_NOTHROW(e.fill_(1.0));
  CHECK(add(e, e).numel() == 0);
}

TEST_CASE("CUDA fill_, zeros, full, add_ and mul_", "[cuda][elementwise]") {
  REQUIRE(kernels::cuda::install_cuda_backend());
  Generator gen(13);
  for (DType dt : {DType::Float32, DType::Float64, DType::Int64}) {
    poison_device_memory();
    require_parity("zeros", Tensor::zeros({7, 300}, dt, Device::cuda()),
                   Tensor::zeros({7, 300}, dt), 0.0);
    require_parity("full", Tensor::full({3, 5, 7}, -2.5, dt, Device::cuda()),
                   Tensor::full({3, 5, 7}, -2.5, dt), 0.0);
    Tensor a = Tensor::zeros({6, 10}, dt), ad = Tensor::zeros({6, 10}, dt, Device::cuda());
    a.slice(1, 1, 10, 3).fill_(4.0);
    ad.slice(1, 1, 10, 3).fill_(4.0);
    a.transpose(0, 1).slice(0, 2, 4).fill_(-1.0);
    ad.transpose(0, 1).slice(0, 2, 4).fill_(-1.0);
    require_parity("fill_ of strided views", ad, a, 0.0);
  }
  for (DType dt : kDtypes) {
    const double rtol = testing::rtol_of(dt);
    const Tensor x = random_uniform({8, 33}, gen, dt), row = random_uniform({33}, gen, dt);
    Tensor a = x.clone(), ad = on_cuda(x);
    a.add_(row, -0.75);
    ad.add_(on_cuda(row), -0.75);
    require_parity("add_ of a broadcast row with alpha", ad, a, rtol);
    a.transpose(0, 1).add_(x.transpose(0, 1));
    ad.transpose(0, 1).add_(on_cuda(x).transpose(0, 1));
    require_parity("add_ into a transposed view", ad, a, rtol);
    a.mul_(1.0 / 3.0);
    ad.mul_(1.0 / 3.0);
    require_parity("mul_", ad, a, rtol);
  }
}

TEST_CASE("CUDA binary ops with broadcasting and strided operands", "[cuda][elementwise]") {
  Generator gen(14);
  struct Case {
    Shape a, b;
  };
  const Case cases[] = {{{7, 33}, {7, 33}},        {{7, 33}, {33}},       {{5, 1, 9}, {1, 4, 9}},
                        {{3, 4, 5, 6}, {4, 1, 6}}, {{130, 70}, {130, 1}}, {{6, 5}, {}}};
  for (DType dt : kDtypes)
    for (const Case& c : cases) {
      INFO("shapes " << shape_str(c.a) << " and " << shape_str(c.b));
      const Tensor a = random_uniform(c.a, gen, dt), b = random_uniform(c.b, gen, dt, 0.5, 2.0);
      check_op_parity(
          "add", [](const auto& v) { return add(v[0], v[1]); }, {a, b}, gen);
      check_op_parity(
          "sub", [](const auto& v) { return sub(v[0], v[1]); }, {a, b}, gen);
      check_op_parity(
          "mul", [](const auto& v) { return mul(v[0], v[1]); }, {a, b}, gen);
      check_op_parity(
          "div", [](const auto& v) { return div(v[0], v[1]); }, {a, b}, gen);
      const Tensor base = random_uniform(c.a, gen, dt, 0.5, 2.0);
      check_op_parity(
          "pow(tensor, tensor)", [](const auto& v) { return pow(v[0], v[1]); },
          {base, random_uniform(c.b, gen, dt, -2.0, 2.0)}, gen);
    }
  for (DType dt : kDtypes) {
    // Transposed and sliced operands: the kernels read them through their strides.
    const Tensor a = random_uniform({12, 17}, gen, dt), b = random_uniform({17, 24}, gen, dt);
    check_op_parity(
        "mul of strided views",
        [](const auto& v) {
          return mul(v[0], v[1].slice(1, 0, 24, 2).slice(1, 0, 12).transpose(0, 1));
        },
        {a, b}, gen);
    check_op_parity(
        "add of a transposed 3-d view",
        [](const auto& v) {
          return add(v[0].reshape({3, 4, 17}).permute({2, 0, 1}),
                     v[1].slice(1, 0, 4).reshape({17, 1, 4}));
        },
        {a, b}, gen);
  }
}

TEST_CASE("CUDA unary ops and activations", "[cuda][elementwise]") {
  Generator gen(15);
  for (DType dt : kDtypes) {
    const Tensor x = random_uniform({23, 41}, gen, dt, -4.0, 4.0);
    const Tensor pos = random_uniform({23, 41}, gen, dt, 0.1, 5.0);
    // Inputs are read through a transpose so the strided path runs too.
    auto t = [](const Tensor& v) { return v.transpose(0, 1); };
    check_op_parity(
        "neg", [&](const auto& v) { return neg(t(v[0])); }, {x}, gen);
    check_op_parity(
        "exp", [&](const auto& v) { return exp(t(v[0])); }, {x}, gen);
    check_op_parity(
        "log", [&](const auto& v) { return log(t(v[0])); }, {pos}, gen);
    check_op_parity(
        "sqrt", [&](const auto& v) { return sqrt(t(v[0])); }, {pos}, gen);
    for (double p : {2.0, 3.5, -1.5, 0.5})
      check_op_parity(
          "pow(x, " + std::to_string(p) + ")", [&](const auto& v) { return pow(t(v[0]), p); },
          {pos}, gen);
    check_op_parity(
        "relu", [&](const auto& v) { return relu(t(v[0])); }, {x}, gen);
    check_op_parity(
        "sigmoid", [&](const auto& v) { return sigmoid(t(v[0])); }, {x}, gen);
    check_op_parity(
        "softplus", [&](const auto& v) { return softplus(t(v[0])); }, {x}, gen);
    check_op_parity(
        "add scalar", [&](const auto& v) { return add(t(v[0]), 0.3); }, {x}, gen);
    check_op_parity(
        "mul scalar", [&](const auto& v) { return mul(t(v[0]), -1.7); }, {x}, gen);
    // Large magnitudes: the stable branches of sigmoid and softplus.
    const Tensor big = random_uniform({1000}, gen, dt, -60.0, 60.0);
    check_op_parity(
        "sigmoid of large inputs", [](const auto& v) { return sigmoid(v[0]); }, {big}, gen);
    check_op_parity(
        "softplus of large inputs", [](const auto& v) { return softplus(v[0]); }, {big}, gen);
  }
  // A long contiguous input: many blocks of the grid-stride loop.
  const Tensor longx = random_uniform({3, 200003}, gen, DType::Float32);
  check_op_parity(
      "exp of a long input", [](const auto& v) { return exp(v[0]); }, {longx}, gen);
}

TEST_CASE("CUDA concat", "[cuda][elementwise]") {
  Generator gen(16);
  for (DType dt : kDtypes) {
    const Tensor a = random_uniform({4, 9}, gen, dt), b = random_uniform({3, 4}, gen, dt),
                 c = random_uniform({4, 1}, gen, dt), d = random_uniform({9, 2}, gen, dt);
    check_op_parity(
        "concat along dim 1 of a transposed input",
        [](const auto& v) {
          return concat({v[0], v[1].transpose(0, 1), v[2]}, 1);
        },
        {a, b, c}, gen);
    check_op_parity(
        "concat along dim 0 of a broadcast input",
        [](const auto& v) {
          return concat({v[0], v[1].slice(1, 0, 1).transpose(0, 1).expand({3, 9})}, 0);
        },
        {a, d}, gen);
  }
}

TEST_CASE("CUDA dropout draws the CPU's mask", "[cuda][elementwise]") {
  Generator gen(17);
  for (DType dt : kDtypes) {
    const Tensor x = random_uniform({16, 45}, gen, dt);
    // Each evaluation reseeds, so CPU and CUDA (and the three passes) see the same mask.
    check_op_parity(
        "dropout",
        [](const auto& v) {
          Generator g(99);
          return dropout(v[0], 0.3, true, g);
        },
        {x}, gen);
  }
  const Tensor x = random_uniform({5, 6}, gen, DType::Float32);
  Generator g(1);
  CHECK(dropout(on_cuda(x), 0.5, false, g).device() == Device::cuda());
}
