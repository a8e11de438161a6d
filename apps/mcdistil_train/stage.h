// A pipeline stage: K models trained together by the one distill::Trainer under one
// weighting policy for a number of epochs (teacher training, student warm start, and each
// distillation method are all stages). The stage evaluates every model on the validation and
// test splits each epoch, keeps each model's best-validation weights, logs metrics, and
// checkpoints its exact position (weights, optimizers, policy state, loader position,
// meters) so that an interrupted run resumes bit-identically.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <mcd/data/dataset.h>
#include <mcd/data/split.h>
#include <mcd/data/transforms.h>
#include <mcd/distill/trainer.h>

#include "run_files.h"

namespace mcd::app {

struct OptimSpec {
  double lr = 0.1, momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = false;
  std::string schedule = "cosine";  // cosine | step | constant, per epoch
  std::int64_t step_size = 30;
  double gamma = 0.1;
};

struct DataSplits {
  const data::Dataset* train = nullptr;
  const data::Dataset* test = nullptr;
  data::Split split;
  data::Normalization normalization;
  std::int64_t batch_size = 128, eval_batch_size = 500;
  data::Augmentation augmentation;  // training batches only
  std::int64_t loader_threads = 0;
  Device device;  // where every model trains (batches are built on the host and moved there)
  // Data parallelism: one replica of every model per device here (device is then the first),
  // each trained on its share of every batch (collective.h). Empty: one replica, on `device`.
  std::vector<Device> replicas;
  // The replicas' collective, made by the pipeline when replicas has two devices or more.
  std::function<Collective&(int rank)> collective;
  bool student_streams = true;  // each student on a stream of its own, where the device has them
  std::size_t shared_student_streams = 0;  // Trainer::set_shared_student_streams
  bool graphs = true;  // repeated steps replayed as CUDA graphs, where the device has them
};

struct StageSpec {
  std::string name;    // file prefix and metrics tag: teacher, warmstart, ce, kd, takd_hop1, ...
  std::string method;  // ce | kd | takd | dgkd | mcdistil
  std::string role;    // teacher | student
  std::vector<std::string> archs;
  std::vector<std::string> init_checkpoints;  // per model: weights to start from ("" = fresh)
  std::int64_t epochs = 1;
  OptimSpec optim;
  std::uint64_t seed = 0;
  bool progress = true;
};

struct StageResult {
  std::vector<ModelSummary> models;
  std::vector<std::string> best_checkpoints;  // per model, best-validation weights
  double seconds = 0.0;                       // wall time of the training epochs
  double seconds_per_epoch = 0.0;
  std::int64_t peak_bytes = 0;  // host memory high-water mark in this stage
  // On a GPU, its memory's high-water marks in this stage (0 on the CPU): held by tensors, and
  // reserved from the driver (held, cached by the caching allocator, kept by captured graphs).
  std::int64_t device_peak_bytes = 0;
  std::int64_t device_peak_reserved_bytes = 0;
};

struct Interrupted {};

// A trained model to load: its architecture and checkpoint.
struct ModelSource {
  std::string arch, checkpoint;
};
// The model on `device`, in eval mode, for data of `d`'s shape and classes.
std::shared_ptr<nn::Module> load_trained_model(const ModelSource& source, const data::Dataset& d,
                                               Device device);

// Runs (or, with resume, continues or skips) a stage. `make_policy` builds the weighting
// policy of a replica on `device` once the students exist; `teachers` is empty for CE stages,
// one model for KD and MC-Distil, several for DGKD, loaded onto every replica's device.
using PolicyFactory = std::function<std::unique_ptr<distill::WeightingPolicy>(Device device)>;
StageResult run_stage(const StageSpec& spec, const DataSplits& data,
                      const std::vector<ModelSource>& teachers, const PolicyFactory& make_policy,
                      double tau, const RunDirectory& run, bool resume,
                      const std::atomic<bool>& stop, std::int64_t stop_after_steps = 0);

}  // namespace mcd::app
