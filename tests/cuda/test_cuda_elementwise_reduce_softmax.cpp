// CPU/CUDA parity of the elementwise family, part two: sums and means over any dimensions,
// sum_to_shape, argmax, softmax and log_softmax with temperature along any dimension, and the
// per-sample cross-entropy and softmax KL, with short rows (a warp per row) and long rows (a
// block per row). Forward, VJP and JVP are compared against the CPU in float32 and float64.
#include <cmath>

#include <catch2/catch.hpp>

#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>

#include "cuda/test_cuda_elementwise_parity.h"

using namespace mcd;
using mcd::testing::check_op_parity;
using mcd::testing::on_cuda;
using mcd::testing::random_uniform;

namespace {
const DType kDtypes[] = {DType::Float32, DType::Float64};

Tensor random_labels(std::int64_t b, std::int64_t v, Generator& gen) {
  std::vector<std::int64_t> y(static_cast<std::size_t>(b));
  for (auto& l : y)
    l = static_cast<std::int64_t>(gen.uniform() * static_cast<double>(v)) % v;
  return Tensor::from_vector(y, {b});
}

// `t` on the device of `like`: the harness runs one function on both devices.
Tensor on_device_of(const Tensor& like, const Tensor& t) {
  return like.device().is_cpu() ? t : on_cuda(t);
}
}  // namespace

TEST_CASE("CUDA sum, mean and sum_to_shape", "[cuda][reduce]") {
  Generator gen(21);
  for (DType dt : kDtypes) {
    const Tensor x = random_uniform({6, 7, 45}, gen, dt);
    check_op_parity(
        "sum", [](const auto& v) { return sum(v[0]); }, {x}, gen);
    check_op_parity(
        "mean", [](const auto& v) { return mean(v[0]); }, {x}, gen);
    check_op_parity(
        "sum over the last dim", [](const auto& v) { return sum(v[0], {-1}); }, {x}, gen);
    check_op_parity(
        "sum over dim 1 (inner > 1)", [](const auto& v) { return sum(v[0], {1}, true); }, {x}, gen);
    check_op_parity(
        "sum over dims 0 and 2 (permuted)",
        [](const auto& v) {
          return sum(v[0], {0, 2}, true);
        },
        {x}, gen);
    check_op_parity(
        "mean over dims 0 and 1",
        [](const auto& v) {
          return mean(v[0], {0, 1});
        },
        {x}, gen);
    check_op_parity(
        "sum of a transposed view", [](const auto& v) { return sum(v[0].transpose(0, 2), {0}); },
        {x}, gen);
    check_op_parity(
        "sum_to_shape",
        [](const auto& v) {
          return sum_to_shape(v[0], {7, 1});
        },
        {x}, gen);
    // Long rows take a block per row.
    const Tensor wide = random_uniform({3, 5000}, gen, dt);
    check_op_parity(
        "sum of long rows", [](const auto& v) { return sum(v[0], {1}); }, {wide}, gen);
    const Tensor big = random_uniform({1 << 18}, gen, dt);
    check_op_parity(
        "sum of a long vector", [](const auto& v) { return sum(v[0]); }, {big}, gen);
  }
}

TEST_CASE("CUDA argmax", "[cuda][reduce]") {
  Generator gen(22);
  testing::ParityOptions forward_only;
  forward_only.differentiable = false;
  for (DType dt : kDtypes) {
    const Tensor x = random_uniform({9, 13, 5}, gen, dt);
    for (std::int64_t d : {0, 1, 2})
      check_op_parity(
          "argmax", [d](const auto& v) { return argmax(v[0], d); }, {x}, gen, forward_only);
    check_op_parity(
        "argmax of a transposed view",
        [](const auto& v) { return argmax(v[0].transpose(0, 1), 1); }, {x}, gen, forward_only);
    // Ties go to the first index, as on the CPU.
    const Tensor ties = Tensor::from_doubles({1, 3, 3, 0, 2, 2, 2, 1}, {2, 4}, dt);
    CHECK(argmax(on_cuda(ties), 1).to_doubles() == std::vector<double>{1, 0});
  }
}

TEST_CASE("CUDA softmax and log_softmax with temperature", "[cuda][softmax]") {
  Generator gen(23);
  for (DType dt : kDtypes) {
    const Tensor x = random_uniform({4, 7, 5}, gen, dt, -5.0, 5.0);
    for (double tau : {1.0, 2.0})
      for (std::int64_t d : {-1, 1, 0}) {
        INFO("dim " << d << ", tau " << tau);
        check_op_parity(
            "softmax", [=](const auto& v) { return softmax(v[0], d, tau); }, {x}, gen);
        check_op_parity(
            "log_softmax", [=](const auto& v) { return log_softmax(v[0], d, tau); }, {x}, gen);
      }
    // Rows longer than a warp's share (block per row) and large logits.
    const Tensor wide = random_uniform({3, 2500}, gen, dt, -40.0, 40.0);
    check_op_parity(
        "softmax of long rows", [](const auto& v) { return softmax(v[0], 1, 2.0); }, {wide}, gen);
    check_op_parity(
        "log_softmax of long rows", [](const auto& v) { return log_softmax(v[0], 1, 2.0); }, {wide},
        gen);
    // A transposed input is made contiguous first.
    check_op_parity(
        "softmax of a transposed view",
        [](const auto& v) { return softmax(v[0].transpose(0, 1), -1); },
        {random_uniform({10, 33}, gen, dt)}, gen);
  }
}

TEST_CASE("CUDA cross_entropy and kl_div_softmax", "[cuda][softmax]") {
  Generator gen(24);
  struct Case {
    std::int64_t b, v;
  };
  testing::ParityOptions losses;
  losses.floor = 1.0;  // losses in nats: a row's loss may be near 0, its error set by O(1) terms
  for (DType dt : kDtypes)
    for (const Case c : {Case{37, 10}, Case{5, 1500}, Case{64, 100}}) {
      INFO("B " << c.b << ", V " << c.v);
      const Tensor z = random_uniform({c.b, c.v}, gen, dt, -6.0, 6.0);
      const Tensor t = random_uniform({c.b, c.v}, gen, dt, -6.0, 6.0);
      const Tensor y = random_labels(c.b, c.v, gen);
      check_op_parity(
          "cross_entropy", [](const auto& v) { return cross_entropy(v[0], v[1]); }, {z, y}, gen,
          losses);
      for (double tau : {1.0, 2.0, 4.0})
        check_op_parity(
            "kl_div_softmax", [tau](const auto& v) { return kl_div_softmax(v[0], v[1], tau); },
            {z, t}, gen, losses);
      // Only the student differentiable, as in distillation (the teacher is a constant).
      check_op_parity(
          "kl_div_softmax with a constant target",
          [t](const auto& v) { return kl_div_softmax(v[0], on_device_of(v[0], t), 2.0); }, {z}, gen,
          losses);
    }
}

TEST_CASE("CUDA cross_entropy marks rows with out-of-range labels", "[cuda][softmax]") {
  REQUIRE(kernels::cuda::install_cuda_backend());
  const Tensor z = Tensor::zeros({3, 4}, DType::Float32, Device::cuda());
  const Tensor y = on_cuda(Tensor::from_vector<std::int64_t>({1, 4, -1}, {3}));
  const auto loss = cross_entropy(z, y).to_doubles();
  CHECK(loss[0] == Approx(std::log(4.0)));
  CHECK(std::isnan(loss[1]));
  CHECK(std::isnan(loss[2]));
}
