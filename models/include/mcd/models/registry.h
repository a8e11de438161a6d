// Models by name: one explicit list in registry.cpp, no static registration. Every model
// returned is a ResNet (std::dynamic_pointer_cast<ResNet> reaches forward_features).
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
std::vector<std::string> model_names();
// The architecture behind a registered name (same error for unknown names).
ResNetSpec model_spec(const std::string& name);

}  // namespace mcd::nn
