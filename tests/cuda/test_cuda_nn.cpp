// CPU/CUDA parity of the "nn" ops on the engine's tensors: matmul and linear (cuBLAS), conv2d
// (cuDNN), batch_norm (own kernels; also the running statistics, the fused relu and the fused
// residual) and the pools, each forward, VJP and JVP, in float32 and float64, on odd shapes and
// non-contiguous views. Tolerances are the parity tolerances of cuda_test_support.h (1e-5 float32,
// 1e-12 float64, normwise).
#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/graph.h>
#include <mcd/engine/ops/batch_norm.h>
#include <mcd/engine/ops/conv.h>
#include <mcd/engine/ops/linalg.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/engine/stream.h>
#include <mcd/kernels/cuda/backend.h>

#include "cuda/test_cuda_nn_parity.h"

using namespace mcd;
using mcd::testing::check_op_parity;
using mcd::testing::parity_rtol;
namespace kcu = mcd::kernels::cuda;

namespace {

Tensor randn(const Shape& shape, Generator& gen, DType dtype) {
  return Tensor::randn(shape, gen, dtype);
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA matmul and linear match the CPU", "[cuda][nn][matmul]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(11);
  const DType dt = dtype_of<TestType>();
  const double tol = parity_rtol<TestType>();
  const auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  check_op_parity("matmul 2-D", mm, {randn({37, 53}, gen, dt), randn({53, 29}, gen, dt)}, tol, gen);
  // Transposed operands are read in place (CUBLAS_OP_T).
  check_op_parity(
      "matmul a^T b^T",
      [](const std::vector<Tensor>& in) {
        return matmul(in[0].transpose(0, 1), in[1].transpose(0, 1));
      },
      {randn({53, 37}, gen, dt), randn({29, 53}, gen, dt)}, tol, gen);
  // A column slice: row-major with a leading dimension larger than the width.
  check_op_parity(
      "matmul sliced",
      [](const std::vector<Tensor>& in) { return matmul(in[0].slice(1, 3, 40), in[1]); },
      {randn({17, 45}, gen, dt), randn({37, 9}, gen, dt)}, tol, gen);
  check_op_parity("matmul batched", mm, {randn({3, 17, 19}, gen, dt), randn({3, 19, 5}, gen, dt)},
                  tol, gen);
  check_op_parity("matmul broadcast batch", mm,
                  {randn({2, 1, 7, 9}, gen, dt), randn({3, 9, 4}, gen, dt)}, tol, gen);
  check_op_parity("matmul matrix times batch", mm,
                  {randn({6, 11}, gen, dt), randn({4, 11, 3}, gen, dt)}, tol, gen);
  check_op_parity(
      "linear", [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
      {randn({13, 37}, gen, dt), randn({21, 37}, gen, dt), randn({21}, gen, dt)}, tol, gen);
  check_op_parity(
      "linear 3-D input", [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
      {randn({2, 5, 16}, gen, dt), randn({10, 16}, gen, dt)}, tol, gen);
}

TEMPLATE_TEST_CASE("CUDA conv2d matches the CPU", "[cuda][nn][conv2d]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(12);
  const DType dt = dtype_of<TestType>();
  const double tol = parity_rtol<TestType>();
  struct Case {
    const char* name;
    Shape x, w;
    Conv2dOptions o;
    bool bias;
  };
  const std::vector<Case> cases = {
      {"3x3 pad 1 with bias", {4, 3, 17, 15}, {8, 3, 3, 3}, {1, 1, 1, 1, 1}, true},
      {"3x3 stride 2", {2, 16, 16, 16}, {32, 16, 3, 3}, {2, 2, 1, 1, 1}, false},
      {"1x1 stride 2 (shortcut)", {2, 16, 8, 8}, {32, 16, 1, 1}, {2, 2, 0, 0, 1}, false},
      {"groups 2", {2, 8, 9, 9}, {6, 4, 3, 3}, {1, 1, 1, 1, 2}, true},
      {"depthwise stride 2", {3, 6, 11, 11}, {6, 1, 3, 3}, {2, 2, 1, 1, 6}, false},
      {"5x3 kernel, uneven stride", {2, 5, 13, 10}, {7, 5, 5, 3}, {2, 1, 2, 0, 1}, true},
  };
  for (const Case& c : cases) {
    std::vector<Tensor> in;  // filled one by one: GCC 12 warns falsely on a list then push_back
    in.reserve(3);
    in.push_back(randn(c.x, gen, dt));
    in.push_back(randn(c.w, gen, dt));
    if (c.bias) in.push_back(randn({c.w[0]}, gen, dt));
    const Conv2dOptions o = c.o;
    check_op_parity(
        c.name,
        [o](const std::vector<Tensor>& v) {
          return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), o);
        },
        in, tol, gen);
  }
  // A non-contiguous input: the spatial axes of a (N, C, W, H) tensor swapped.
  check_op_parity(
      "conv2d on a transposed view",
      [](const std::vector<Tensor>& v) {
        return conv2d(v[0].transpose(2, 3), v[1], Tensor(), {1, 1, 1, 1, 1});
      },
      {randn({2, 4, 7, 12}, gen, dt), randn({5, 4, 3, 3}, gen, dt)}, tol, gen);
}

TEST_CASE("CUDA conv2d: a shape first met inside a graph capture", "[cuda][nn][conv2d][graph]") {
  // Timing cuDNN's candidates would break the capture: the capture takes cuDNN's heuristic
  // choice, and the shape's first eager use still times them. The shapes are this test's own,
  // so no earlier test has chosen their algorithms.
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(19);
  const Tensor x = randn({3, 5, 23, 19}, gen, DType::Float32);
  const Tensor w = randn({7, 5, 3, 3}, gen, DType::Float32);
  const Tensor u = randn({3, 7, 23, 19}, gen, DType::Float32);
  const Conv2dOptions o{1, 1, 1, 1, 1};
  const auto forward_and_vjp = [&](const Tensor& xs, const Tensor& ws, const Tensor& us) {
    const Tensor xr = xs.detach().set_requires_grad(true), wr = ws.detach().set_requires_grad(true);
    const Tensor y = conv2d(xr, wr, Tensor(), o);
    std::vector<Tensor> out = grad({y}, {xr, wr}, {us});
    out.insert(out.begin(), y.detach());
    return out;
  };
  const std::vector<Tensor> expected = forward_and_vjp(x, w, u);
  const Tensor xd = x.to(Device::cuda()), wd = w.to(Device::cuda()), ud = u.to(Device::cuda());
  PooledStream lane(Device::cuda());
  const StreamGuard on(lane.ref());
  std::vector<Tensor> captured;
  const auto graph =
      DeviceGraph::capture(lane.ref(), [&] { captured = forward_and_vjp(xd, wd, ud); });
  graph->replay(lane.ref());
  const std::vector<Tensor> eager = forward_and_vjp(xd, wd, ud);  // times the candidates
  const char* names[] = {"y", "dx", "dw"};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const std::vector<double> want = expected[i].to_doubles();
    mcd::testing::require_close(std::string("replayed ") + names[i], captured[i].to_doubles(), want,
                                1e-5);
    mcd::testing::require_close(std::string("eager ") + names[i], eager[i].to_doubles(), want,
                                1e-5);
  }
}

TEMPLATE_TEST_CASE("CUDA batch_norm matches the CPU", "[cuda][nn][batch_norm]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(13);
  const DType dt = dtype_of<TestType>();
  const double tol = parity_rtol<TestType>();
  for (const bool training : {true, false})
    for (const bool affine : {true, false})
      for (const Shape& shape : {Shape{8, 5, 7, 9}, Shape{16, 13}, Shape{3, 4, 40, 33}}) {
        const std::int64_t c = shape[1];
        // Running statistics away from (0, 1), so eval mode is not the identity.
        const Tensor rm = Tensor::uniform({c}, gen, -0.5, 0.5, dt);
        const Tensor rv = Tensor::uniform({c}, gen, 0.5, 2.0, dt);
        std::vector<Tensor> in;
        in.reserve(3);
        in.push_back(Tensor::uniform(shape, gen, 1.0, 3.0, dt));  // mean far from 0
        if (affine) {
          in.push_back(randn({c}, gen, dt));
          in.push_back(randn({c}, gen, dt));
        }
        BatchNormOptions o;
        o.training = training;
        const std::string name = std::string("batch_norm ") + (training ? "train" : "eval") +
                                 (affine ? " affine " : " ") + shape_str(shape);
        // The op under test uses fresh copies of the running statistics on the inputs' device.
        check_op_parity(
            name,
            [&, o](const std::vector<Tensor>& v) {
              const Device d = v[0].device();
              return batch_norm(v[0], affine ? v[1] : Tensor(), affine ? v[2] : Tensor(),
                                rm.clone().to(d), rv.clone().to(d), o);
            },
            in, tol, gen);
        // The running-statistic update in place, in the input's dtype and in float32 (float32
        // statistics on a float64 input, for the float64 run).
        if (training)
          for (const DType stats : {dt, DType::Float32}) {
            Tensor rmc = rm.to(stats).clone(), rvc = rv.to(stats).clone();
            Tensor rmd = rm.to(stats).to(Device::cuda()), rvd = rv.to(stats).to(Device::cuda());
            batch_norm(in[0], Tensor(), Tensor(), rmc, rvc, o);
            batch_norm(in[0].to(Device::cuda()), Tensor(), Tensor(), rmd, rvd, o);
            const double stats_tol = stats == DType::Float32 ? 1e-5 : tol;
            mcd::testing::require_tensor_close(name + " running_mean", rmd, rmc, stats_tol);
            mcd::testing::require_tensor_close(name + " running_var", rvd, rvc, stats_tol);
          }
      }
  // A non-contiguous input (channels last in memory).
  BatchNormOptions o;
  check_op_parity(
      "batch_norm on a permuted view",
      [o](const std::vector<Tensor>& v) {
        return batch_norm(v[0].permute({0, 3, 1, 2}), v[1], v[2], Tensor(), Tensor(), o);
      },
      {randn({4, 6, 5, 7}, gen, dt), randn({7}, gen, dt), randn({7}, gen, dt)}, tol, gen);
}

TEMPLATE_TEST_CASE("CUDA batch_norm with relu matches the CPU", "[cuda][nn][batch_norm]", float,
                   double) {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(15);
  const DType dt = dtype_of<TestType>();
  const double tol = parity_rtol<TestType>();
  for (const bool training : {true, false})
    for (const int params : {2, 1, 0})  // weight and bias, weight only, neither
      for (const Shape& shape : {Shape{8, 5, 7, 9}, Shape{16, 13}, Shape{3, 4, 40, 33}}) {
        const std::int64_t c = shape[1];
        // Running means inside the inputs' range, so that in eval mode without a bias some
        // pre-activations are negative too and the mask is not all ones.
        const Tensor rm = Tensor::uniform({c}, gen, 1.5, 2.5, dt);
        const Tensor rv = Tensor::uniform({c}, gen, 0.5, 2.0, dt);
        std::vector<Tensor> in;
        in.reserve(3);
        in.push_back(Tensor::uniform(shape, gen, 1.0, 3.0, dt));  // mean far from 0
        for (int k = 0; k < params; ++k)
          in.push_back(randn({c}, gen, dt));
        BatchNormOptions o;
        o.training = training;
        o.relu = true;
        const std::string name = std::string("batch_norm relu ") + (training ? "train" : "eval") +
                                 (params == 2   ? " affine "
                                  : params == 1 ? " weight only "
                                                : " ") +
                                 shape_str(shape);
        check_op_parity(
            name,
            [&, o](const std::vector<Tensor>& v) {
              const Device d = v[0].device();
              return batch_norm(v[0], v.size() > 1 ? v[1] : Tensor(),
                                v.size() > 2 ? v[2] : Tensor(), rm.clone().to(d), rv.clone().to(d),
                                o);
            },
            in, tol, gen);
      }
  // A non-contiguous input (channels last in memory).
  BatchNormOptions o;
  o.relu = true;
  check_op_parity(
      "batch_norm relu on a permuted view",
      [o](const std::vector<Tensor>& v) {
        return batch_norm(v[0].permute({0, 3, 1, 2}), v[1], v[2], Tensor(), Tensor(), o);
      },
      {randn({4, 6, 5, 7}, gen, dt), randn({7}, gen, dt), randn({7}, gen, dt)}, tol, gen);
}

TEMPLATE_TEST_CASE("CUDA batch_norm_add matches the CPU", "[cuda][nn][batch_norm]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(16);
  const DType dt = dtype_of<TestType>();
  const double tol = parity_rtol<TestType>();
  for (const bool training : {true, false})
    for (const bool relu : {true, false})
      for (const Shape& shape : {Shape{8, 5, 7, 9}, Shape{16, 13}, Shape{3, 4, 40, 33}}) {
        const std::int64_t c = shape[1];
        const Tensor rm = Tensor::uniform({c}, gen, 1.5, 2.5, dt);
        const Tensor rv = Tensor::uniform({c}, gen, 0.5, 2.0, dt);
        BatchNormOptions o;
        o.training = training;
        o.relu = relu;
        const std::string name = std::string("batch_norm_add") + (relu ? " relu " : " ") +
                                 (training ? "train " : "eval ") + shape_str(shape);
        // x, weight, bias, residual: the residual around -bias so that the mask is mixed.
        check_op_parity(
            name,
            [&, o](const std::vector<Tensor>& v) {
              const Device d = v[0].device();
              return batch_norm_add(v[0], v[1], v[2], rm.clone().to(d), rv.clone().to(d), v[3], o);
            },
            {Tensor::uniform(shape, gen, 1.0, 3.0, dt), randn({c}, gen, dt), randn({c}, gen, dt),
             randn(shape, gen, dt)},
            tol, gen);
        // Only the residual differentiated: its gradient without a wanted dx.
        const Tensor x = Tensor::uniform(shape, gen, 1.0, 3.0, dt);
        check_op_parity(
            name + " residual only",
            [&, o](const std::vector<Tensor>& v) {
              const Device d = v[0].device();
              return batch_norm_add(x.to(d), Tensor(), Tensor(), rm.clone().to(d), rv.clone().to(d),
                                    v[0], o);
            },
            {randn(shape, gen, dt)}, tol, gen);
      }
  // A non-contiguous input and residual (channels last in memory).
  BatchNormOptions o;
  o.relu = true;
  check_op_parity(
      "batch_norm_add relu on permuted views",
      [o](const std::vector<Tensor>& v) {
        return batch_norm_add(v[0].permute({0, 3, 1, 2}), v[1], v[2], Tensor(), Tensor(),
                              v[3].permute({0, 3, 1, 2}), o);
      },
      {randn({4, 6, 5, 7}, gen, dt), randn({7}, gen, dt), randn({7}, gen, dt),
       randn({4, 6, 5, 7}, gen, dt)},
      tol, gen);
}

// Large shapes, float32 only and outside the [batch_norm] tag that compute-sanitizer runs: more
// channels than a grid's second dimension holds (the moments' blocks), and a map longer than
// one pass of its grid-stride loop (65535 blocks of 256 threads).
TEST_CASE("CUDA batch_norm_add matches the CPU on large shapes", "[cuda][nn][batch_norm_large]") {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(17);
  const DType dt = DType::Float32;
  for (const Shape& shape : {Shape{4, 70000}, Shape{2, 3, 2048, 2048}}) {
    BatchNormOptions o;
    o.relu = true;
    const std::int64_t c = shape[1];
    check_op_parity(
        "batch_norm_add relu " + shape_str(shape),
        [o](const std::vector<Tensor>& v) {
          return batch_norm_add(v[0], v[1], v[2], Tensor(), Tensor(), v[3], o);
        },
        {randn(shape, gen, dt), randn({c}, gen, dt), randn({c}, gen, dt), randn(shape, gen, dt)},
        parity_rtol<float>(), gen);
  }
}

TEMPLATE_TEST_CASE("CUDA pooling matches the CPU", "[cuda][nn][pool]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(14);
  const DType dt = dtype_of<TestType>();
  const double tol = parity_rtol<TestType>();
  struct Case {
    const char* name;
    Shape x;
    Pool2dOptions o;
  };
  const std::vector<Case> cases = {
      {"3x3 stride 2 pad 1 (ResNet stem)", {2, 3, 17, 16}, {3, 3, 2, 2, 1, 1}},
      {"2x2 stride 2", {3, 4, 10, 9}, {2, 2, 2, 2, 0, 0}},
      {"3x2 stride 1 overlapping", {2, 2, 7, 8}, {3, 2, 1, 1, 1, 0}},
  };
  for (const Case& c : cases) {
    const Pool2dOptions o = c.o;
    check_op_parity(
        std::string("max_pool2d ") + c.name,
        [o](const std::vector<Tensor>& v) { return max_pool2d(v[0], o); }, {randn(c.x, gen, dt)},
        tol, gen);
    check_op_parity(
        std::string("avg_pool2d ") + c.name,
        [o](const std::vector<Tensor>& v) { return avg_pool2d(v[0], o); }, {randn(c.x, gen, dt)},
        tol, gen);
  }
  // Ties: small integers repeat inside windows; the first maximum must win on both sides.
  {
    std::vector<double> vals;
    for (int i = 0; i < 2 * 3 * 9 * 8; ++i)
      vals.push_back(static_cast<double>(gen.below(3)));
    const Tensor x = Tensor::from_doubles(vals, {2, 3, 9, 8}, dt);
    check_op_parity(
        "max_pool2d with ties",
        [](const std::vector<Tensor>& v) {
          return max_pool2d(v[0], {3, 3, 2, 2, 1, 1});
        },
        {x}, tol, gen);
  }
  for (const auto& [h, w] : {std::pair<std::int64_t, std::int64_t>{3, 4}, {1, 1}, {5, 5}}) {
    const std::int64_t oh = h, ow = w;
    check_op_parity(
        "adaptive_avg_pool2d to " + std::to_string(oh) + "x" + std::to_string(ow),
        [oh, ow](const std::vector<Tensor>& v) { return adaptive_avg_pool2d(v[0], oh, ow); },
        {randn({2, 3, 7, 9}, gen, dt)}, tol, gen);
  }
  check_op_parity(
      "avg_pool2d on a transposed view",
      [](const std::vector<Tensor>& v) { return avg_pool2d(v[0].transpose(2, 3), {}); },
      {randn({2, 3, 8, 6}, gen, dt)}, tol, gen);
}
