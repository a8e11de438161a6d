// Trains one classifier with cross-entropy, evaluating on the validation and test splits
// every epoch, keeping the best-validation checkpoint, and checkpointing its exact position
// so an interrupted run resumes with the same batches and ends with the same weights.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

#include <mcd/data/dataset.h>
#include <mcd/data/split.h>
#include <mcd/data/transforms.h>

#include "run_files.h"

namespace mcd::app {

struct ClassifierConfig {
  std::string role = "student";
  std::string arch = "resnet10_s";
  std::int64_t epochs = 10;
  std::int64_t batch_size = 128;
  std::int64_t eval_batch_size = 500;
  double lr = 0.1;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = false;
  std::string schedule = "cosine";  // cosine | step | constant
  std::int64_t step_size = 30;
  double gamma = 0.1;
  std::int64_t crop_padding = 2;
  bool horizontal_flip = true;
  std::uint64_t seed = 0;
  bool progress = true;
};

struct DataSplits {
  const data::Dataset* train = nullptr;
  const data::Dataset* test = nullptr;
  data::Split split;
  data::Normalization normalization;
};

// Returns the summary; throws Interrupted when `stop` was raised (after checkpointing).
ModelSummary train_classifier(const ClassifierConfig& config, const DataSplits& data,
                              const RunDirectory& run, bool resume, const std::atomic<bool>& stop);

struct Interrupted {};

}  // namespace mcd::app
