// Supervised building blocks shared by every trainer: one cross-entropy training step and
// evaluation of a classifier on a subset of a dataset.
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/data/dataset.h>
#include <mcd/data/loader.h>
#include <mcd/engine/optim/optimizer.h>
#include <mcd/models/module.h>

namespace mcd::distill {

struct EvalResult {
  double accuracy = 0.0;   // fraction in [0, 1]
  double mean_loss = 0.0;  // mean per-sample cross-entropy
  std::int64_t count = 0;
};

// Evaluates in eval mode without recording a graph; restores the model's previous mode.
EvalResult evaluate(nn::Module& model, const data::Dataset& data,
                    const std::vector<std::int64_t>& indices,
                    const data::Normalization& normalization, std::int64_t batch_size);

struct StepResult {
  double loss = 0.0;  // mean cross-entropy of the batch
  std::int64_t correct = 0;
  std::int64_t count = 0;
};

// One SGD-family step on the mean cross-entropy of `batch` (model in training mode).
StepResult train_step_ce(nn::Module& model, optim::Optimizer& optimizer, const data::Batch& batch);

}  // namespace mcd::distill
