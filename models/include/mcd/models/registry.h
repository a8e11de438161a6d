// Models by name: explicit lists in registry.cpp, no static registration. The names of
// resnet_model_names() build a ResNet (std::dynamic_pointer_cast<ResNet> reaches
// forward_features); the model zoo (CifarResNet, WideResNet, MobileNetV2, ShuffleNetV2) follows.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/generator.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>
#include <mcd/models/resnet.h>

namespace mcd::nn {

// Throws, listing the known names, when `name` is not one of model_names().
std::shared_ptr<Module> make_model(const std::string& name, const ModelConfig& config,
                                   Generator& gen);
std::vector<std::string> model_names();  // the ResNet family first, then the zoo
std::vector<std::string> resnet_model_names();
// The architecture behind a ResNet-family name; throws for zoo names and unknown names.
ResNetSpec model_spec(const std::string& name);

}  // namespace mcd::nn
