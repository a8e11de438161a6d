// BasicBlock, Bottleneck and ResNet. Child registration order follows torchvision, so
// named_parameters() lists tensors in the order PyTorch does. Convolutions feeding a
// BatchNorm have no bias, as in torchvision. A headless ResNet (num_classes 0) has no fc.
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/models/resnet.h>

namespace mcd::nn {
namespace {

void check_block_args(const char* block, std::int64_t in_planes, std::int64_t planes,
                      std::int64_t stride) {
  MCD_CHECK(in_planes > 0 && planes > 0 && stride > 0,
            "{}: invalid in_planes {}, planes {}, stride {}", block, in_planes, planes, stride);
}

// The projection shortcut, or null when the identity already has the output's shape.
std::shared_ptr<Sequential> make_downsample(std::int64_t in_planes, std::int64_t out_planes,
                                            std::int64_t stride, Generator& gen) {
  if (stride == 1 && in_planes == out_planes) return nullptr;
  auto ds = std::make_shared<Sequential>();
  ds->push_back(std::make_shared<Conv2d>(in_planes, out_planes, 1, gen, stride, 0, 1, false));
  ds->push_back(std::make_shared<BatchNorm2d>(out_planes));
  return ds;
}

}  // namespace

// ---- BasicBlock

BasicBlock::BasicBlock(std::int64_t in_planes, std::int64_t planes, std::int64_t stride,
                       Generator& gen) {
  check_block_args("BasicBlock", in_planes, planes, stride);
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_planes, planes, 3, gen, stride, 1, 1, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
  conv2_ =
      register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, gen, 1, 1, 1, false));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  if (auto ds = make_downsample(in_planes, planes * expansion, stride, gen))
    downsample_ = register_module("downsample", ds);
}

Tensor BasicBlock::forward(const Tensor& x) {
  const Tensor out = bn1_->forward_relu(conv1_->forward(x));
  const Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
  return bn2_->forward_add_relu(conv2_->forward(out), shortcut);
}

// ---- Bottleneck

Bottleneck::Bottleneck(std::int64_t in_planes, std::int64_t planes, std::int64_t stride,
                       Generator& gen) {
  check_block_args("Bottleneck", in_planes, planes, stride);
  conv1_ =
      register_module("conv1", std::make_shared<Conv2d>(in_planes, planes, 1, gen, 1, 0, 1, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
  conv2_ = register_module("conv2",
                           std::make_shared<Conv2d>(planes, planes, 3, gen, stride, 1, 1, false));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  conv3_ = register_module(
      "conv3", std::make_shared<Conv2d>(planes, planes * expansion, 1, gen, 1, 0, 1, false));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(planes * expansion));
  if (auto ds = make_downsample(in_planes, planes * expansion, stride, gen))
    downsample_ = register_module("downsample", ds);
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor out = bn1_->forward_relu(conv1_->forward(x));
  out = bn2_->forward_relu(conv2_->forward(out));
  const Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
  return bn3_->forward_add_relu(conv3_->forward(out), shortcut);
}

// ---- ResNet

std::int64_t block_expansion(BlockKind kind) {
  return kind == BlockKind::Basic ? BasicBlock::expansion : Bottleneck::expansion;
}

ResNet::ResNet(const ResNetSpec& spec, const ModelConfig& config, Generator& gen)
    : spec_(spec), config_(config) {
  MCD_CHECK(config.in_channels > 0 && config.num_classes >= 0 && config.input_size > 0,
            "ResNet: invalid config in_channels {}, num_classes {} (0 for a headless feature "
            "extractor), input_size {}",
            config.in_channels, config.num_classes, config.input_size);
  for (std::size_t s = 0; s < 4; ++s)
    MCD_CHECK(spec.blocks[s] > 0 && spec.widths[s] > 0,
              "ResNet: stage {} needs at least one block and a positive width, got {} blocks "
              "of width {}",
              s + 1, spec.blocks[s], spec.widths[s]);

  const std::int64_t stem = spec.widths[0];
  const bool imagenet = config.input_size > 32;
  conv1_ = register_module(
      "conv1", imagenet
                   ? std::make_shared<Conv2d>(config.in_channels, stem, 7, gen, 2, 3, 1, false)
                   : std::make_shared<Conv2d>(config.in_channels, stem, 3, gen, 1, 1, 1, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(stem));
  if (imagenet) maxpool_ = register_module("maxpool", std::make_shared<MaxPool2d>(3, 2, 1));

  const std::int64_t expansion = block_expansion(spec.block);
  std::int64_t in_planes = stem;
  for (std::size_t s = 0; s < 4; ++s) {
    auto layer = std::make_shared<Sequential>();
    for (std::int64_t b = 0; b < spec.blocks[s]; ++b) {
      const std::int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      if (spec.block == BlockKind::Basic)
        layer->push_back(std::make_shared<BasicBlock>(in_planes, spec.widths[s], stride, gen));
      else
        layer->push_back(std::make_shared<Bottleneck>(in_planes, spec.widths[s], stride, gen));
      in_planes = spec.widths[s] * expansion;
    }
    layers_[s] = register_module("layer" + std::to_string(s + 1), layer);
  }
  feature_dim_ = in_planes;
  // A headless model must not own an unused classifier: its parameters would get zero
  // gradients and still drift under weight decay.
  if (config.num_classes > 0)
    fc_ = register_module("fc", std::make_shared<Linear>(feature_dim_, config.num_classes, gen));
}

Tensor ResNet::forward_features(const Tensor& x) {
  check_defined("ResNet", x);
  MCD_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels,
            "ResNet: expected an input (N, {}, H, W), got shape {}", config_.in_channels,
            shape_str(x.shape()));
  Tensor h = bn1_->forward_relu(conv1_->forward(x));
  if (maxpool_) h = maxpool_->forward(h);
  for (const auto& layer : layers_)
    h = layer->forward(h);
  return adaptive_avg_pool2d(h, 1, 1).flatten(1);
}

Tensor ResNet::forward(const Tensor& x) {
  MCD_CHECK(fc_ != nullptr,
            "ResNet: forward() needs a classifier, but this model was built headless "
            "(num_classes 0, no fc); call forward_features() for its (N, {}) features",
            feature_dim_);
  return fc_->forward(forward_features(x));
}

}  // namespace mcd::nn
