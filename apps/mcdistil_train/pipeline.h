// The mcdistil_train pipeline: teacher (loaded or trained with CE) -> students warm-started
// with CE (or loaded) -> each distillation method of the configuration in turn, every one
// starting from the same warm-started students -> a per-student accuracy table and
// summary.json. Every stage checkpoints itself, so --resume continues a killed run.
#pragma once
#include <atomic>
#include <string>

#include <mcd/data/label_noise.h>
#include <mcd/data/registry.h>

#include "config.h"
#include "stage.h"

namespace mcd::app {

struct PipelineOptions {
  bool resume = false;
  std::int64_t stop_after_steps = 0;  // simulate an interrupt after this many steps (tests)
};

// The dataset named by the configuration (any registered format).
data::TrainTest load_data(const DataConfig& c);
// The seeded train/validation split, normalisation, augmentation and loader settings.
DataSplits make_splits(const Config& c, const data::TrainTest& dataset);
// Replaces the training split's labels by noisy ones (data.label_noise) and returns both.
data::NoisyLabels apply_label_noise(const Config& c, data::Dataset& train, const DataSplits& d);

// Returns the process exit status: 0 done, 2 bad input (message printed), 130 interrupted.
int run_pipeline(const Config& config, const PipelineOptions& options,
                 const std::atomic<bool>& stop);

}  // namespace mcd::app
