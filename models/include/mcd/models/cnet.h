// The coordinator network (C-Net) of MC-Distil: per training sample, a CE weight alpha_k and
// a KD weight beta_k for each of K students, laid out as (B, 2K) with column 2k = alpha_k and
// 2k+1 = beta_k. Variants (DESIGN.md §3), all selectable by name:
//   input "image"           a ResNet backbone (default resnet10_s) over the normalised image
//   input "image+students"  the image embedding concatenated with detached per-student
//                           signals (each student's per-sample ce, kl to the teacher and
//                           confidence), shape (B, 3K)
//   head  "sigmoid"         linear(features -> 2K) then sigmoid: weights in (0, 1)
//   head  "official"        the released code's choice: the pooled ReLU features themselves,
//                           channels 2k and 2k+1 (non-negative, unbounded; needs 2K <= width)
// BatchNorm follows the module's train/eval mode; the release keeps it in training mode.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <mcd/engine/generator.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>
#include <mcd/models/resnet.h>

namespace mcd::nn {

enum class CNetInput { Image, ImageStudents };
enum class CNetHead { Sigmoid, Official };

CNetInput parse_cnet_input(const std::string& name);  // "image" | "image+students"
CNetHead parse_cnet_head(const std::string& name);    // "sigmoid" | "official"
std::string to_string(CNetInput input);
std::string to_string(CNetHead head);

struct CNetConfig {
  CNetInput input = CNetInput::Image;
  CNetHead head = CNetHead::Sigmoid;
  std::int64_t num_students = 1;        // K
  std::string backbone = "resnet10_s";  // any registered ResNet
  ModelConfig image;                    // in_channels and input_size of the images
};

class CNet final : public Module {
 public:
  CNet(const CNetConfig& config, Generator& gen);

  // Weights for the "image" input. (B, C, H, W) -> (B, 2K)
  Tensor forward(const Tensor& images) override;
  // Weights for either input; student_signals (B, 3K) is required for "image+students" and
  // ignored otherwise: columns 3k, 3k+1, 3k+2 = student k's ce, kl, confidence.
  Tensor weights(const Tensor& images, const Tensor& student_signals);

  const CNetConfig& config() const { return config_; }

 private:
  CNetConfig config_;
  std::shared_ptr<ResNet> backbone_;
  std::shared_ptr<Module> head_;  // Linear for the sigmoid head; none for the official head
};

}  // namespace mcd::nn
