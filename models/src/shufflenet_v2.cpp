// ShuffleNetV2 blocks and network. The split and the shuffle are views (slice, reshape,
// permute) and concat, so both branches stay differentiable in reverse and forward mode.
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/engine/ops/shape_ops.h>
#include <mcd/models/shufflenet_v2.h>

namespace mcd::nn {
namespace {

std::shared_ptr<Conv2d> pointwise(std::int64_t in, std::int64_t out, Generator& gen) {
  return std::make_shared<Conv2d>(in, out, 1, gen, 1, 0, 1, false);
}

std::shared_ptr<Conv2d> depthwise(std::int64_t channels, std::int64_t stride, Generator& gen) {
  return std::make_shared<Conv2d>(channels, channels, 3, gen, stride, 1, channels, false);
}

}  // namespace

ShuffleNetV2Spec shufflenet_v2_spec(double net_size) {
  if (net_size == 0.2) return {{40, 80, 160, 512}, {3, 3, 3}};
  if (net_size == 0.3) return {{40, 80, 160, 512}, {3, 7, 3}};
  if (net_size == 0.5) return {{48, 96, 192, 1024}, {3, 7, 3}};
  if (net_size == 1.0) return {{116, 232, 464, 1024}, {3, 7, 3}};
  if (net_size == 1.5) return {{176, 352, 704, 1024}, {3, 7, 3}};
  if (net_size == 2.0) return {{224, 488, 976, 2048}, {3, 7, 3}};
  fail("shufflenet_v2_spec: unknown net size {}; known sizes: 0.2, 0.3, 0.5, 1, 1.5, 2", net_size);
}

Tensor channel_shuffle(const Tensor& x, std::int64_t groups) {
  check_defined("channel_shuffle", x);
  MCD_CHECK(x.dim() == 4 && groups > 0 && x.size(1) % groups == 0,
            "channel_shuffle: expected (N, C, H, W) with C divisible by groups {}, got shape {}",
            groups, shape_str(x.shape()));
  const std::int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return x.reshape({n, groups, c / groups, h, w}).permute({0, 2, 1, 3, 4}).reshape({n, c, h, w});
}

// ---- ShuffleSplitBlock

ShuffleSplitBlock::ShuffleSplitBlock(std::int64_t channels, Generator& gen) : channels_(channels) {
  MCD_CHECK(channels >= 2 && channels % 2 == 0,
            "ShuffleSplitBlock: channels must be even and >= 2, got {}", channels);
  const std::int64_t half = channels / 2;
  conv1_ = register_module("conv1", pointwise(half, half, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(half));
  conv2_ = register_module("conv2", depthwise(half, 1, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(half));
  conv3_ = register_module("conv3", pointwise(half, half, gen));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(half));
}

Tensor ShuffleSplitBlock::forward(const Tensor& x) {
  check_defined("ShuffleSplitBlock", x);
  MCD_CHECK(x.dim() == 4 && x.size(1) == channels_,
            "ShuffleSplitBlock: expected an input (N, {}, H, W), got shape {}", channels_,
            shape_str(x.shape()));
  const std::int64_t half = channels_ / 2;
  const Tensor x1 = x.slice(1, 0, half), x2 = x.slice(1, half, channels_);
  Tensor out = bn1_->forward_relu(conv1_->forward(x2));
  out = bn2_->forward(conv2_->forward(out));
  out = bn3_->forward_relu(conv3_->forward(out));
  return channel_shuffle(concat({x1, out}, 1), 2);
}

// ---- ShuffleDownBlock

ShuffleDownBlock::ShuffleDownBlock(std::int64_t in_channels, std::int64_t out_channels,
                                   Generator& gen) {
  MCD_CHECK(in_channels > 0 && out_channels >= 2 && out_channels % 2 == 0,
            "ShuffleDownBlock: invalid in_channels {}, out_channels {} (must be even)", in_channels,
            out_channels);
  const std::int64_t mid = out_channels / 2;
  conv1_ = register_module("conv1", depthwise(in_channels, 2, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in_channels));
  conv2_ = register_module("conv2", pointwise(in_channels, mid, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(mid));
  conv3_ = register_module("conv3", pointwise(in_channels, mid, gen));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(mid));
  conv4_ = register_module("conv4", depthwise(mid, 2, gen));
  bn4_ = register_module("bn4", std::make_shared<BatchNorm2d>(mid));
  conv5_ = register_module("conv5", pointwise(mid, mid, gen));
  bn5_ = register_module("bn5", std::make_shared<BatchNorm2d>(mid));
}

Tensor ShuffleDownBlock::forward(const Tensor& x) {
  Tensor left = bn1_->forward(conv1_->forward(x));
  left = bn2_->forward_relu(conv2_->forward(left));
  Tensor right = bn3_->forward_relu(conv3_->forward(x));
  right = bn4_->forward(conv4_->forward(right));
  right = bn5_->forward_relu(conv5_->forward(right));
  return channel_shuffle(concat({left, right}, 1), 2);
}

// ---- ShuffleNetV2

ShuffleNetV2::ShuffleNetV2(const ShuffleNetV2Spec& spec, const ModelConfig& config, Generator& gen)
    : spec_(spec), config_(config) {
  for (std::size_t i = 0; i < 3; ++i)
    MCD_CHECK(spec.num_blocks[i] >= 0, "ShuffleNetV2: num_blocks[{}] must be >= 0, got {}", i,
              spec.num_blocks[i]);
  MCD_CHECK(spec.out_channels[3] > 0, "ShuffleNetV2: out_channels[3] must be positive, got {}",
            spec.out_channels[3]);
  MCD_CHECK(config.in_channels > 0 && config.num_classes > 0 && config.input_size > 0,
            "ShuffleNetV2: invalid config in_channels {}, num_classes {}, input_size {}",
            config.in_channels, config.num_classes, config.input_size);
  constexpr std::int64_t kStem = 24;
  // The reference's stem is a 1x1 conv (its 3x3 version is commented out).
  conv1_ = register_module("conv1", pointwise(config.in_channels, kStem, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(kStem));
  std::int64_t channels = kStem;
  for (std::size_t s = 0; s < 3; ++s) {
    auto layer = std::make_shared<Sequential>();
    const std::int64_t out = spec.out_channels[s];
    layer->push_back(std::make_shared<ShuffleDownBlock>(channels, out, gen));
    for (std::int64_t b = 0; b < spec.num_blocks[s]; ++b)
      layer->push_back(std::make_shared<ShuffleSplitBlock>(out, gen));
    channels = out;
    layers_[s] = register_module("layer" + std::to_string(s + 1), layer);
  }
  conv2_ = register_module("conv2", pointwise(channels, spec.out_channels[3], gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(spec.out_channels[3]));
  linear_ = register_module(
      "linear", std::make_shared<Linear>(spec.out_channels[3], config.num_classes, gen));
}

Tensor ShuffleNetV2::forward_features(const Tensor& x) {
  check_defined("ShuffleNetV2", x);
  MCD_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels,
            "ShuffleNetV2: expected an input (N, {}, H, W), got shape {}", config_.in_channels,
            shape_str(x.shape()));
  Tensor h = bn1_->forward_relu(conv1_->forward(x));
  for (const auto& layer : layers_)
    h = layer->forward(h);
  h = bn2_->forward_relu(conv2_->forward(h));
  // Global pooling: the reference's avg_pool2d(4) at 32 pixels.
  return adaptive_avg_pool2d(h, 1, 1).flatten(1);
}

Tensor ShuffleNetV2::forward(const Tensor& x) {
  return linear_->forward(forward_features(x));
}

}  // namespace mcd::nn
