// The configuration of mcdistil_train: one plain struct per TOML section, read from a file,
// overridden by "section.key=value" arguments, validated. A default-constructed Config is the
// embedded default; every key is described once, in config.cpp's key table.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <mcd/engine/error.h>

namespace mcd::app {

// Thrown for unreadable files, unknown keys, wrong types and out-of-range values. The message
// names the source (file path or "command line"), the full key and what was expected.
class ConfigError : public mcd::Error {
 public:
  using mcd::Error::Error;
};

// [run]
struct RunConfig {
  std::string dir;  // empty: runs/<time>-<method>
  std::int64_t seed = 0;
  std::int64_t threads = 0;  // 0: all cores
  bool progress = true;
  std::string device = "cpu";  // cpu | cuda (falls back to the CPU when no device is usable)
  // Data parallelism: one replica per entry (all "cpu", or distinct GPUs); empty: run.device.
  std::vector<std::string> devices;
  bool student_streams = true;  // cuda: each student on a stream of its own
  // cuda, with student_streams: 0 (or n >= K), a stream per student; 1 <= n < K, n streams
  std::int64_t shared_student_streams = 0;
  bool cuda_graphs = true;  // cuda: repeated steps captured once and replayed as a graph
  // Run in this order, each from the same warm-started students.
  std::vector<std::string> methods = {"ce", "kd", "mcdistil"};  // ce|kd|takd|dgkd|mcdistil
  bool operator==(const RunConfig&) const = default;
};

// [data]
struct DataConfig {
  // fashion-mnist | mnist | cifar10 | cifar100 | cifar100-coarse | tiny-imagenet | imagefolder
  std::string dataset = "fashion-mnist";
  std::string path = "/usr/share/datasets/fashion-mnist";
  double val_fraction = 0.1;     // held out of the training set for validation and meta batches
  std::int64_t limit_train = 0;  // 0: the whole training split
  std::int64_t batch_size = 128;
  std::int64_t eval_batch_size = 500;
  std::int64_t crop_padding = 2;  // 0: no random crop
  bool flip = true;
  bool resized_crop = false;        // random resized crop (torchvision defaults) instead of padding
  double jitter = 0.0;              // colour jitter: brightness = contrast = saturation factor
  std::int64_t cutout = 0;          // cutout hole side in pixels after normalisation; 0: off
  std::int64_t loader_threads = 0;  // worker threads building batches ahead; 0: in the trainer
  bool skip_bad_images = false;     // skip and count undecodable images instead of failing
  std::string label_noise = "none";  // none | symmetric | instance (training split only)
  double noise_rate = 0.0;
  bool operator==(const DataConfig&) const = default;
};

// SGD and learning-rate schedule keys shared by [teacher] and [students].
struct TrainerConfig {
  double lr = 0.1;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = false;
  std::string schedule = "cosine";  // cosine | step | constant
  std::int64_t step_size = 30;      // epochs between decays (step)
  double gamma = 0.1;               // decay factor (step)
  bool operator==(const TrainerConfig&) const = default;
};

// [teacher]
struct TeacherConfig {
  std::string arch = "resnet10_m";
  std::string checkpoint;  // safetensors state dict loaded instead of training; empty: train
  std::int64_t epochs = 4;
  TrainerConfig optim{.lr = 0.1};
  bool operator==(const TeacherConfig&) const = default;
};

// [students]
struct StudentsConfig {
  std::vector<std::string> archs = {"resnet10_xxs", "resnet10_xs", "resnet10_s"};
  std::int64_t warm_start_epochs = 1;  // CE epochs before distilling
  std::string checkpoint_dir;  // holds student_<arch>.safetensors to load instead of warm-starting
  TrainerConfig optim{.lr = 0.05};
  bool operator==(const StudentsConfig&) const = default;
};

// [distill]
struct DistillConfig {
  std::int64_t epochs = 3;
  double tau = 2.0;
  double kd_alpha = 0.5;            // KD loss: (1 - a) CE + a tau^2 KL
  std::int64_t dgkd_drop = 1;       // DGKD: guides dropped per iteration
  std::int64_t meta_interval = 20;  // L: iterations between C-Net meta steps
  std::int64_t meta_batch_size = 128;
  bool operator==(const DistillConfig&) const = default;
};

// [cnet]
struct CNetConfigSection {
  std::string input = "image";   // image | image+students
  std::string head = "sigmoid";  // sigmoid | official
  std::string backbone = "resnet10_s";
  double lr = 1e-3;  // Adam
  double weight_decay = 1e-4;
  bool batchnorm_train = true;  // batch statistics for the weights, as the release does
  bool operator==(const CNetConfigSection&) const = default;
};

struct Config {
  RunConfig run;
  DataConfig data;
  TeacherConfig teacher;
  StudentsConfig students;
  DistillConfig distill;
  CNetConfigSection cnet;
  bool operator==(const Config&) const = default;
};

// Reads `path` (skipped when empty), then applies `overrides` ("section.key=value", value in
// TOML syntax; strings may be bare) in order. Every value is type- and range-checked.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// Every key with its effective value, in TOML that load_config reads back to an equal Config.
std::string to_toml(const Config& c);
// The same keys as {"section": {"key": value}}.
nlohmann::json to_json(const Config& c);
// One line per key, "section.key  (type, default)  help", for --help.
std::string describe_keys();

}  // namespace mcd::app
