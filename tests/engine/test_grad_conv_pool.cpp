// conv2d and pooling: forward against direct reference loops written here (float64 to 1e-12,
// float32 to 1e-5 of the sum of absolute terms), float64 VJP/JVP checks on odd shapes and
// strided inputs, thread-count independence of the weight gradient, and shape errors.
#include <catch2/catch.hpp>

#include <omp.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/conv.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/engine/ops/reduce.h>

#include "support/gradcheck.h"

using namespace mcd;
using mcd::testing::check_gradients;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

// A reference result and, per element, the sum of the absolute values of its terms: the
// scale that rounding errors are measured against.
struct Reference {
  std::vector<double> value, magnitude;
};

// (N, C, H, W) view of a tensor with non-trivial strides: built as (N, H, C, W) and permuted.
Tensor strided_nchw(const Shape& nchw, Generator& gen) {
  return random_tensor({nchw[0], nchw[2], nchw[1], nchw[3]}, gen).permute({0, 2, 1, 3});
}

// Values k / n for k in [-n/2, n/2), shuffled: no two elements tie, so max pooling is smooth.
Tensor distinct_tensor(const Shape& shape, Generator& gen) {
  const auto n = shape_numel(shape);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[i] = static_cast<double>(i - n / 2) / n;
  for (std::int64_t i = n - 1; i > 0; --i)
    std::swap(v[i], v[gen.below(static_cast<std::uint64_t>(i + 1))]);
  return Tensor::from_doubles(v, shape, DType::Float64);
}

Reference conv2d_reference(const Tensor& x, const Tensor& w, const Tensor& b,
                           const Conv2dOptions& o) {
  const auto xs = x.to_doubles(), ws = w.to_doubles();
  const auto bs = b.defined() ? b.to_doubles() : std::vector<double>{};
  const std::int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const std::int64_t CO = w.size(0), CIG = w.size(1), KH = w.size(2), KW = w.size(3);
  const std::int64_t COG = CO / o.groups;
  const std::int64_t HO = (H + 2 * o.pad_h - KH) / o.stride_h + 1;
  const std::int64_t WO = (W + 2 * o.pad_w - KW) / o.stride_w + 1;
  Reference r;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t co = 0; co < CO; ++co)
      for (std::int64_t oh = 0; oh < HO; ++oh)
        for (std::int64_t ow = 0; ow < WO; ++ow) {
          double s = bs.empty() ? 0.0 : bs[co], m = std::abs(s);
          for (std::int64_t cl = 0; cl < CIG; ++cl)
            for (std::int64_t i = 0; i < KH; ++i)
              for (std::int64_t j = 0; j < KW; ++j) {
                const std::int64_t ih = oh * o.stride_h - o.pad_h + i;
                const std::int64_t iw = ow * o.stride_w - o.pad_w + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const std::int64_t ci = (co / COG) * CIG + cl;
                const double t =
                    ws[((co * CIG + cl) * KH + i) * KW + j] * xs[((n * C + ci) * H + ih) * W + iw];
                s += t;
                m += std::abs(t);
              }
          r.value.push_back(s);
          r.magnitude.push_back(m);
        }
  return r;
}

enum class PoolKind { Max, Avg, Adaptive };

// Adaptive pooling reads its output size from o.kernel_h / o.kernel_w.
Reference pool_reference(PoolKind kind, const Tensor& x, const Pool2dOptions& o) {
  const auto xs = x.to_doubles();
  const std::int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  std::int64_t HO, WO;
  if (kind == PoolKind::Adaptive) {
    HO = o.kernel_h;
    WO = o.kernel_w;
  } else {
    HO = (H + 2 * o.pad_h - o.kernel_h) / o.stride_h + 1;
    WO = (W + 2 * o.pad_w - o.kernel_w) / o.stride_w + 1;
  }
  Reference r;
  for (std::int64_t p = 0; p < N * C; ++p)
    for (std::int64_t oh = 0; oh < HO; ++oh)
      for (std::int64_t ow = 0; ow < WO; ++ow) {
        std::int64_t h0, h1, w0, w1;
        if (kind == PoolKind::Adaptive) {
          h0 = static_cast<std::int64_t>(std::floor(double(oh) * H / HO));
          h1 = static_cast<std::int64_t>(std::ceil(double(oh + 1) * H / HO));
          w0 = static_cast<std::int64_t>(std::floor(double(ow) * W / WO));
          w1 = static_cast<std::int64_t>(std::ceil(double(ow + 1) * W / WO));
        } else {  // the padded window, clipped below when reading
          h0 = oh * o.stride_h - o.pad_h;
          h1 = h0 + o.kernel_h;
          w0 = ow * o.stride_w - o.pad_w;
          w1 = w0 + o.kernel_w;
        }
        double best = -std::numeric_limits<double>::infinity(), s = 0, m = 0;
        for (std::int64_t ih = h0; ih < h1; ++ih)
          for (std::int64_t iw = w0; iw < w1; ++iw) {
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;  // max: -inf, avg: 0
            const double v = xs[(p * H + ih) * W + iw];
            best = std::max(best, v);
            s += v;
            m += std::abs(v);
          }
        if (kind == PoolKind::Max) {
          r.value.push_back(best);
          r.magnitude.push_back(std::abs(best));
        } else {
          const double area = kind == PoolKind::Avg ? double(o.kernel_h * o.kernel_w)
                                                    : double((h1 - h0) * (w1 - w0));
          r.value.push_back(s / area);
          r.magnitude.push_back(m / area);
        }
      }
  return r;
}

// |got - ref| <= rtol * (magnitude + 1e-30) elementwise; reports the worst element.
void check_matches(const std::string& what, const Tensor& got, const Reference& ref, double rtol) {
  const auto g = got.to_doubles();
  REQUIRE(g.size() == ref.value.size());
  double worst = -1;
  std::size_t at = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double excess = std::abs(g[i] - ref.value[i]) - rtol * (ref.magnitude[i] + 1e-30);
    if (excess > worst || i == 0) worst = excess, at = i;
  }
  INFO(fmt::format("{}: worst element {} got {:.17g} reference {:.17g}", what, at, g[at],
                   ref.value[at]));
  CHECK(worst <= 0.0);
}

struct ConvCase {
  std::string name;
  Shape x, w;
  Conv2dOptions o;
  bool bias = true;
  bool strided = false;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"3x3 pad 1", {2, 3, 7, 5}, {4, 3, 3, 3}, {1, 1, 1, 1, 1}},
      {"3x3 stride 2 pad 1", {2, 3, 7, 5}, {4, 3, 3, 3}, {2, 2, 1, 1, 1}},
      {"3x3 no pad, no bias", {2, 3, 7, 5}, {2, 3, 3, 3}, {1, 1, 0, 0, 1}, false},
      {"non-square 2x3 kernel, mixed stride and pad", {2, 3, 7, 6}, {3, 3, 2, 3}, {2, 1, 1, 0, 1}},
      {"1x4 kernel stride (1, 3)", {1, 2, 5, 9}, {2, 2, 1, 4}, {1, 3, 0, 2, 1}},
      {"groups 2", {2, 4, 6, 5}, {6, 2, 3, 3}, {1, 1, 1, 1, 2}},
      {"groups 2 stride 2, strided input", {2, 4, 7, 5}, {4, 2, 3, 2}, {2, 2, 1, 1, 2}, true, true},
      {"depthwise", {2, 3, 7, 5}, {3, 1, 3, 3}, {1, 1, 1, 1, 3}},
      {"depthwise multiplier 2 stride 2, no bias",
       {2, 3, 7, 5},
       {6, 1, 3, 3},
       {2, 2, 1, 1, 3},
       false},
      {"depthwise non-square, strided input",
       {2, 3, 6, 7},
       {3, 1, 3, 2},
       {1, 2, 1, 1, 3},
       true,
       true},
      // Unit strides take the padded wide-row path (conv2d_depthwise.cpp) while pad < kernel.
      {"depthwise 5x5 pad 2, multiplier 2", {2, 2, 6, 7}, {4, 1, 5, 5}, {1, 1, 2, 2, 2}},
      {"depthwise 3x2 no pad, no bias", {2, 3, 5, 4}, {3, 1, 3, 2}, {1, 1, 0, 0, 3}, false},
      {"depthwise 3x7 kernel wider than the input", {1, 2, 4, 2}, {2, 1, 3, 7}, {1, 1, 1, 3, 2}},
      {"depthwise 3x3 pad 1 on a 1x1 plane", {3, 2, 1, 1}, {2, 1, 3, 3}, {1, 1, 1, 1, 2}},
      {"depthwise 1x1 pad 1 (pad not below the kernel)",
       {2, 2, 3, 4},
       {2, 1, 1, 1},
       {1, 1, 1, 1, 2}},
      // Other strides split the padded plane into stride phases.
      {"depthwise 5x5 stride 3 pad 2", {2, 2, 8, 7}, {2, 1, 5, 5}, {3, 3, 2, 2, 2}},
      {"depthwise stride (2, 1) no pad, multiplier 2", {1, 2, 7, 5}, {4, 1, 3, 2}, {2, 1, 0, 0, 2}},
      {"depthwise 3x5 stride 2 pad (1, 2)", {2, 2, 5, 3}, {2, 1, 3, 5}, {2, 2, 1, 2, 2}, false},
      {"single input channel", {2, 1, 6, 5}, {3, 1, 3, 3}, {1, 1, 1, 1, 1}},
      {"1x1 pointwise", {2, 3, 4, 5}, {4, 3, 1, 1}, {1, 1, 0, 0, 1}},
      {"1x1 pointwise groups 3, strided input",
       {2, 6, 3, 5},
       {3, 2, 1, 1},
       {1, 1, 0, 0, 3},
       true,
       true},
      {"1x1 stride 2 downsample", {2, 4, 7, 5}, {5, 4, 1, 1}, {2, 2, 0, 0, 1}},
      {"2x3 kernel pad (0, 1)", {2, 3, 6, 5}, {4, 3, 2, 3}, {1, 1, 0, 1, 1}},
      {"3x7 kernel wider than the input", {1, 2, 4, 2}, {2, 2, 3, 7}, {1, 1, 1, 3, 1}},
      {"5x1 kernel pad (2, 0)", {2, 2, 6, 3}, {3, 2, 5, 1}, {1, 1, 2, 0, 1}},
      {"kernel covers the padded input", {1, 2, 3, 2}, {2, 2, 5, 4}, {1, 1, 1, 1, 1}},
      // Planes narrower than the kernel's reach (a ResNet's last stage on small inputs).
      {"3x3 pad 1 on a 1x1 plane", {3, 3, 1, 1}, {4, 3, 3, 3}, {1, 1, 1, 1, 1}},
      {"5x5 pad 2 on a 2x1 plane", {2, 2, 2, 1}, {3, 2, 5, 5}, {1, 1, 2, 2, 1}},
  };
}

Tensor make_input(const ConvCase& c, Generator& gen) {
  return c.strided ? strided_nchw(c.x, gen) : random_tensor(c.x, gen);
}

}  // namespace

// ---- conv2d

TEST_CASE("conv2d forward matches a direct loop in float64 and float32", "[conv]") {
  Generator gen(21);
  auto cases = conv_cases();
  // A batch large enough for every thread, and a ResNet-like layer.
  cases.push_back({"batch 9", {9, 5, 8, 8}, {7, 5, 3, 3}, {1, 1, 1, 1, 1}});
  cases.push_back({"batch 9 depthwise", {9, 4, 8, 8}, {4, 1, 3, 3}, {1, 1, 1, 1, 4}});
  cases.push_back({"16 channels 16x16", {3, 16, 16, 16}, {16, 16, 3, 3}, {1, 1, 1, 1, 1}});
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor x = make_input(c, gen), w = random_tensor(c.w, gen);
    const Tensor b = c.bias ? random_tensor({c.w[0]}, gen) : Tensor();
    const Reference ref = conv2d_reference(x, w, b, c.o);
    // Repeated calls reuse freed scratch memory, so a scratch entry that is read without
    // being written shows up as a mismatch.
    for (int rep = 0; rep < 3; ++rep)
      check_matches(c.name + " float64", conv2d(x, w, b, c.o), ref, 1e-12);

    const Tensor x32 = x.to(DType::Float32), w32 = w.to(DType::Float32);
    const Tensor b32 = c.bias ? b.to(DType::Float32) : Tensor();
    const Tensor y32 = conv2d(x32, w32, b32, c.o);
    REQUIRE(y32.dtype() == DType::Float32);
    check_matches(c.name + " float32", y32, conv2d_reference(x32, w32, b32, c.o), 1e-5);
  }
}

TEST_CASE("conv2d gradients (VJP and JVP) in float64", "[conv][grad]") {
  Generator gen(22);
  for (const auto& c : conv_cases()) {
    INFO(c.name);
    const Tensor x = make_input(c, gen), w = random_tensor(c.w, gen);
    const Conv2dOptions o = c.o;
    if (c.bias) {
      check_gradients(c.name, [o](const V& v) { return conv2d(v[0], v[1], v[2], o); },
                      {x, w, random_tensor({c.w[0]}, gen)});
    } else {
      check_gradients(c.name, [o](const V& v) { return conv2d(v[0], v[1], Tensor(), o); }, {x, w});
    }
  }
  // A strided weight and bias (a transposed and a sliced view).
  const Tensor x = random_tensor({2, 3, 5, 6}, gen);
  const Tensor w = random_tensor({3, 3, 3, 4}, gen).transpose(0, 1);  // (3, 3, 3, 3)
  const Tensor b = random_tensor({6}, gen).slice(0, 0, 6, 2);
  check_gradients("strided weight and bias",
                  [](const V& v) {
                    return conv2d(v[0], v[1], v[2], {1, 1, 1, 1, 1});
                  },
                  {x, w.slice(3, 0, 3), b});
}

TEST_CASE("depthwise weight gradient: an infinite input reaches only the taps that read it",
          "[conv][grad]") {
  std::vector<double> xs(15, 1.0);
  xs[4] = std::numeric_limits<double>::infinity();  // row 0, last column
  Tensor x = Tensor::from_vector<double>(xs, {1, 1, 3, 5});
  Tensor w = Tensor::from_vector<double>({1, 1, 1}, {1, 1, 1, 3});
  w.set_requires_grad(true);
  const Tensor y = conv2d(x, w, Tensor(), {1, 1, 0, 0, 1});  // depthwise: one channel
  const auto dw = grad({y}, {w}, {Tensor::ones(y.shape(), DType::Float64)})[0].to_doubles();
  CHECK(dw[0] == 9.0);
  CHECK(dw[1] == 9.0);
  CHECK(std::isinf(dw[2]));
}

TEST_CASE("conv2d rules for a subset of the inputs", "[conv][grad]") {
  Generator gen(23);
  const Conv2dOptions o{2, 1, 1, 1, 1};
  const Tensor x = random_tensor({2, 3, 6, 5}, gen), w = random_tensor({4, 3, 3, 3}, gen);
  const Tensor b = random_tensor({4}, gen), u = random_tensor({2, 4, 3, 5}, gen);

  // Reverse mode: each input alone gets the same cotangent as when all require grad.
  auto leaves = [&](std::vector<bool> need) {
    V in{x.detach(), w.detach(), b.detach()};
    for (std::size_t i = 0; i < 3; ++i)
      in[i].set_requires_grad(need[i]);
    return in;
  };
  V all = leaves({true, true, true});
  const V full = grad({conv2d(all[0], all[1], all[2], o)}, all, {u});
  for (std::size_t k = 0; k < 3; ++k) {
    std::vector<bool> need(3, false);
    need[k] = true;
    V in = leaves(need);
    const Tensor y = conv2d(in[0], in[1], in[2], o);
    const V g = grad({y}, {in[k]}, {u});
    CHECK(g[0].to_doubles() == full[k].to_doubles());
  }

  // Forward mode: tangents on any subset add up to the tangent with all of them.
  const V tangents{random_tensor(x.shape(), gen), random_tensor(w.shape(), gen),
                   random_tensor(b.shape(), gen)};
  auto f = [o](const V& in) { return V{conv2d(in[0], in[1], in[2], o)}; };
  const Tensor y_all = jvp(f, {x, w, b}, tangents).tangents[0];
  std::vector<double> summed(static_cast<std::size_t>(y_all.numel()), 0.0);
  for (std::size_t k = 0; k < 3; ++k) {
    V t(3);
    t[k] = tangents[k];
    const auto part = jvp(f, {x, w, b}, t).tangents[0].to_doubles();
    for (std::size_t i = 0; i < part.size(); ++i)
      summed[i] += part[i];
  }
  const auto expect = y_all.to_doubles();
  for (std::size_t i = 0; i < summed.size(); ++i)
    REQUIRE(summed[i] == Approx(expect[i]).margin(1e-12));
}

TEST_CASE("conv2d float32 gradients match float64 and do not depend on threads", "[conv]") {
  Generator gen(24);
  struct Case {
    Shape x, w;
    Conv2dOptions o;
  };
  // Batch 21 splits the weight gradient into uneven chunks.
  const std::vector<Case> cases{{{21, 6, 9, 7}, {8, 6, 3, 3}, {1, 1, 1, 1, 1}},
                                {{21, 6, 9, 7}, {8, 3, 3, 3}, {2, 2, 1, 1, 2}},
                                {{21, 4, 9, 7}, {8, 4, 1, 1}, {1, 1, 0, 0, 1}},
                                {{21, 4, 9, 7}, {8, 1, 3, 3}, {1, 1, 1, 1, 4}},
                                {{21, 4, 9, 7}, {8, 1, 3, 3}, {2, 2, 1, 1, 4}}};
  for (const auto& c : cases) {
    INFO(fmt::format("x {} w {} groups {}", shape_str(c.x), shape_str(c.w), c.o.groups));
    const Tensor x = random_tensor(c.x, gen), w = random_tensor(c.w, gen);
    const Tensor b = random_tensor({c.w[0]}, gen);
    auto grads = [&](DType dt) {
      V in{x.to(dt).detach(), w.to(dt).detach(), b.to(dt).detach()};
      for (auto& t : in)
        t.set_requires_grad(true);
      const Tensor y = conv2d(in[0], in[1], in[2], c.o);
      Generator ug(5);
      const Tensor u = Tensor::uniform(y.shape(), ug, -1, 1, DType::Float64).to(dt);
      return grad({y}, in, {u});
    };
    const V g64 = grads(DType::Float64);
    const V g32 = grads(DType::Float32);
    for (std::size_t k = 0; k < 3; ++k) {
      const auto a = g32[k].to_doubles(), e = g64[k].to_doubles();
      double scale = 0, err = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        scale = std::max(scale, std::abs(e[i]));
        err = std::max(err, std::abs(a[i] - e[i]));
      }
      INFO(fmt::format("input {}: max error {:.3g} for max magnitude {:.3g}", k, err, scale));
      CHECK(err <= 1e-5 * scale);
    }

    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const V one = grads(DType::Float32);
    omp_set_num_threads(std::max(threads, 2));
    const V many = grads(DType::Float32);
    omp_set_num_threads(threads);
    for (std::size_t k = 0; k < 3; ++k)
      CHECK(one[k].to_doubles() == many[k].to_doubles());
  }
}

TEST_CASE("conv2d rejects bad shapes with clear messages", "[conv]") {
  Generator gen(25);
  const Tensor x = random_tensor({2, 4, 6, 6}, gen);
  using Catch::Contains;
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({3, 3, 3, 3}, gen)),
                      Contains("conv2d") && Contains("[3, 3, 3, 3]") && Contains("[2, 4, 6, 6]"));
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({3, 2, 3, 3}, gen), Tensor(), {1, 1, 0, 0, 3}),
                      Contains("conv2d: groups = 3 does not divide the 4 input channels"));
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({3, 2, 3, 3}, gen), Tensor(), {1, 1, 0, 0, 2}),
                      Contains("conv2d: groups = 2 does not divide the 3 output channels"));
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({2, 4, 9, 3}, gen), Tensor(), {1, 1, 1, 1, 1}),
                      Contains("conv2d: kernel 9x3 is larger than the padded input 8x8"));
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({2, 4, 3, 3}, gen), random_tensor({3}, gen)),
                      Contains("conv2d: expected bias of shape [2]"));
  REQUIRE_THROWS_WITH(conv2d(random_tensor({4, 6, 6}, gen), random_tensor({2, 4, 3, 3}, gen)),
                      Contains("conv2d: expected input (N, C, H, W)"));
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({2, 4, 3, 3}, gen), Tensor(), {0, 1, 0, 0, 1}),
                      Contains("conv2d: stride must be >= 1"));
  REQUIRE_THROWS_WITH(conv2d(x, random_tensor({2, 4, 3, 3}, gen).to(DType::Float32)),
                      Contains("conv2d: dtype mismatch"));
}

// ---- pooling

namespace {

struct PoolCase {
  std::string name;
  PoolKind kind;
  Shape x;
  Pool2dOptions o;  // adaptive: kernel_h, kernel_w hold the output size
  bool strided = false;
};

std::vector<PoolCase> pool_cases() {
  using K = PoolKind;
  return {
      {"max 2x2", K::Max, {2, 3, 6, 4}, {2, 2, 2, 2, 0, 0}},
      {"max 3x3 stride 2 pad 1, odd", K::Max, {2, 3, 7, 5}, {3, 3, 2, 2, 1, 1}},
      {"max overlapping 3x2 stride 1", K::Max, {1, 2, 5, 6}, {3, 2, 1, 1, 1, 0}},
      {"max 2x2 on odd input, strided", K::Max, {2, 3, 7, 5}, {2, 2, 2, 2, 0, 0}, true},
      {"avg 2x2", K::Avg, {2, 3, 6, 4}, {2, 2, 2, 2, 0, 0}},
      {"avg 3x3 stride 2 pad 1, odd", K::Avg, {2, 3, 7, 5}, {3, 3, 2, 2, 1, 1}},
      {"avg 2x3 stride (1, 2) pad (1, 1), strided", K::Avg, {2, 2, 5, 7}, {2, 3, 1, 2, 1, 1}, true},
      {"adaptive 7x5 -> 3x2", K::Adaptive, {2, 3, 7, 5}, {3, 2}},
      {"adaptive 7x7 -> 1x1", K::Adaptive, {2, 3, 7, 7}, {1, 1}},
      {"adaptive 6x4 -> 3x4 (exact), strided", K::Adaptive, {2, 3, 6, 4}, {3, 4}, true},
      {"adaptive 3x2 -> 5x3 (upsampling bins)", K::Adaptive, {1, 2, 3, 2}, {5, 3}},
  };
}

Tensor run_pool(PoolKind kind, const Tensor& x, const Pool2dOptions& o) {
  switch (kind) {
    case PoolKind::Max:
      return max_pool2d(x, o);
    case PoolKind::Avg:
      return avg_pool2d(x, o);
    default:
      return adaptive_avg_pool2d(x, o.kernel_h, o.kernel_w);
  }
}

Tensor pool_input(const PoolCase& c, Generator& gen) {
  if (c.kind != PoolKind::Max) return c.strided ? strided_nchw(c.x, gen) : random_tensor(c.x, gen);
  const Shape& s = c.x;
  if (!c.strided) return distinct_tensor(s, gen);
  return distinct_tensor({s[0], s[2], s[1], s[3]}, gen).permute({0, 2, 1, 3});
}

}  // namespace

TEST_CASE("pooling forward matches a direct loop in float64 and float32", "[pool]") {
  Generator gen(31);
  auto cases = pool_cases();
  cases.push_back({"max batch 12", PoolKind::Max, {12, 8, 9, 9}, {3, 3, 2, 2, 1, 1}});
  cases.push_back({"avg batch 12", PoolKind::Avg, {12, 8, 9, 9}, {3, 3, 2, 2, 1, 1}});
  cases.push_back({"adaptive batch 12", PoolKind::Adaptive, {12, 8, 9, 9}, {4, 4}});
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor x = pool_input(c, gen);
    const Reference ref = pool_reference(c.kind, x, c.o);
    check_matches(c.name + " float64", run_pool(c.kind, x, c.o), ref, 1e-12);
    const Tensor x32 = x.to(DType::Float32);
    const Tensor y32 = run_pool(c.kind, x32, c.o);
    REQUIRE(y32.dtype() == DType::Float32);
    check_matches(c.name + " float32", y32, pool_reference(c.kind, x32, c.o), 1e-5);
  }
}

TEST_CASE("pooling gradients (VJP and JVP) in float64", "[pool][grad]") {
  Generator gen(32);
  for (const auto& c : pool_cases()) {
    INFO(c.name);
    const PoolKind kind = c.kind;
    const Pool2dOptions o = c.o;
    check_gradients(c.name, [kind, o](const V& v) { return run_pool(kind, v[0], o); },
                    {pool_input(c, gen)});
  }
}

TEST_CASE("max pooling routes gradients through the argmax element", "[pool]") {
  // Two overlapping windows share the maximum 9: its gradient is the sum of both.
  Tensor x = Tensor::from_vector<double>({1, 9, 2, 3, 4, 5}, {1, 1, 2, 3});
  x.set_requires_grad(true);
  const Tensor y = max_pool2d(x, {2, 2, 1, 1, 0, 0});
  CHECK(y.to_doubles() == std::vector<double>{9, 9});
  const Tensor u = Tensor::from_vector<double>({10, 100}, {1, 1, 1, 2});
  CHECK(grad({y}, {x}, {u})[0].to_doubles() == std::vector<double>{0, 110, 0, 0, 0, 0});
  const Tensor v = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {1, 1, 2, 3});
  auto r = jvp([](const V& in) { return V{max_pool2d(in[0], {2, 2, 1, 1, 0, 0})}; }, {x}, {v});
  CHECK(r.tangents[0].to_doubles() == std::vector<double>{2, 2});
}

TEST_CASE("pooling rejects bad options with clear messages", "[pool]") {
  Generator gen(33);
  const Tensor x = random_tensor({2, 3, 5, 5}, gen);
  using Catch::Contains;
  REQUIRE_THROWS_WITH(max_pool2d(x, {2, 2, 2, 2, 2, 0}),
                      Contains("max_pool2d: padding (2, 0) must be >= 0 and at most half"));
  REQUIRE_THROWS_WITH(avg_pool2d(x, {6, 2, 1, 1, 0, 0}),
                      Contains("avg_pool2d: kernel 6x2 is larger than the padded input 5x5"));
  REQUIRE_THROWS_WITH(avg_pool2d(x, {2, 2, 0, 1, 0, 0}), Contains("avg_pool2d: stride"));
  REQUIRE_THROWS_WITH(max_pool2d(random_tensor({3, 5, 5}, gen), {}),
                      Contains("max_pool2d: expected input (N, C, H, W), got shape [3, 5, 5]"));
  REQUIRE_THROWS_WITH(adaptive_avg_pool2d(x, 0, 2),
                      Contains("adaptive_avg_pool2d: output size must be >= 1"));
  // Padding alone would make windows here, every one of them without a real element.
  REQUIRE_THROWS_WITH(
      max_pool2d(Tensor::zeros({1, 1, 0, 4}), {2, 2, 1, 1, 1, 1}),
      Contains("max_pool2d: input planes must not be empty, got input [1, 1, 0, 4]"));
  REQUIRE_THROWS_WITH(avg_pool2d(Tensor::zeros({1, 1, 4, 0}), {2, 2, 1, 1, 1, 1}),
                      Contains("avg_pool2d: input planes must not be empty"));
}
