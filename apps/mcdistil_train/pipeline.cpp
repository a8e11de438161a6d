#include "pipeline.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include <mcd/data/loader.h>
#include <mcd/distill/classification.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/safetensors.h>
#include <mcd/models/cnet.h>
#include <mcd/models/model_stats.h>
#include <mcd/models/registry.h>

#include "device.h"
#include "run_files.h"
#include "stage.h"

namespace mcd::app {
namespace {

// A stage's costs in summary.json (the device's peaks are 0 on the CPU).
nlohmann::json stage_json(const StageResult& r) {
  return {{"seconds_per_epoch", r.seconds_per_epoch},
          {"peak_bytes", r.peak_bytes},
          {"device_peak_bytes", r.device_peak_bytes},
          {"device_peak_reserved_bytes", r.device_peak_reserved_bytes}};
}

std::string default_run_dir(const Config& c) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  std::string methods;
  for (const auto& m : c.run.methods)
    methods += (methods.empty() ? "" : "-") + m;
  return fmt::format("runs/{}-{}", stamp, methods);
}

OptimSpec optim_spec(const TrainerConfig& t) {
  return {t.lr, t.momentum, t.weight_decay, t.nesterov, t.schedule, t.step_size, t.gamma};
}

std::string joined(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "" : sep) + x;
  return s;
}

void print_table(const Config& c, const ModelSummary& teacher,
                 const std::vector<std::pair<std::string, StageResult>>& methods) {
  fmt::print("\nteacher {}: test accuracy {:.4f} (best validation {:.4f})\n", teacher.arch,
             teacher.test_acc_best, teacher.best_val_acc);
  fmt::print(
      "\ntest accuracy of each student at its best-validation epoch (and at the last epoch)\n");
  fmt::print("{:<16}", "student");
  for (const auto& [m, r] : methods)
    fmt::print(" {:>20}", m);
  fmt::print("\n");
  for (std::size_t k = 0; k < c.students.archs.size(); ++k) {
    fmt::print("{:<16}", c.students.archs[k]);
    for (const auto& [m, r] : methods)
      fmt::print(" {:>20}", fmt::format("{:.4f} ({:.4f})", r.models[k].test_acc_best,
                                        r.models[k].test_acc_last));
    fmt::print("\n");
  }
  fmt::print("{:<16}", "s/epoch");
  for (const auto& [m, r] : methods)
    fmt::print(" {:>20.1f}", r.seconds_per_epoch);
  fmt::print("\n");
}

// What every distillation stage shares: the configuration, the data, the trained teacher and
// the warm-started students.
struct MethodContext {
  const Config& c;
  const DataSplits& d;
  const data::Dataset& train;
  ModelSource teacher;  // the trained teacher, loaded by every stage onto its devices
  const StageResult& warm;
  const RunDirectory& run;
  const PipelineOptions& o;
  const std::atomic<bool>& stop;
};

StageSpec method_stage(const MethodContext& x, std::string name, const std::string& method,
                       std::vector<std::string> archs, std::vector<std::string> init) {
  return {std::move(name),
          method,
          "student",
          std::move(archs),
          std::move(init),
          x.c.distill.epochs,
          optim_spec(x.c.students.optim),
          static_cast<std::uint64_t>(x.c.run.seed) + 3,
          x.c.run.progress};
}

std::unique_ptr<distill::WeightingPolicy> make_cnet_policy(const MethodContext& x, Device device) {
  const Config& c = x.c;
  const auto seed = static_cast<std::uint64_t>(c.run.seed);
  nn::CNetConfig cc;
  cc.input = nn::parse_cnet_input(c.cnet.input);
  cc.head = nn::parse_cnet_head(c.cnet.head);
  cc.num_students = static_cast<std::int64_t>(c.students.archs.size());
  cc.backbone = c.cnet.backbone;
  cc.image = {x.train.channels, 0, x.train.height};
  Generator gen(seed * 31 + 7);
  auto cnet = std::make_shared<nn::CNet>(cc, gen);
  cnet->to(device);  // before Adam holds any state
  optim::AdamOptions adam;
  adam.lr = c.cnet.lr;
  adam.weight_decay = c.cnet.weight_decay;
  data::LoaderOptions vo;  // meta batches: held-out split, never augmented
  vo.batch_size = c.distill.meta_batch_size;
  vo.shuffle = true;
  vo.normalization = x.d.normalization;
  vo.seed = seed + 4;
  return std::make_unique<distill::CNetWeighting>(cnet, adam, c.distill.meta_interval,
                                                  data::BatchIterator(x.train, x.d.split.val, vo),
                                                  c.cnet.batchnorm_train);
}

// CE, KD and MC-Distil: all students in one stage.
StageResult run_method(const MethodContext& x, const std::string& method) {
  const StageSpec s = method_stage(x, method, method, x.c.students.archs, x.warm.best_checkpoints);
  PolicyFactory make_policy;
  std::vector<ModelSource> teachers;
  if (method == "ce") {
    make_policy = [](Device) { return distill::ce_weighting(); };
  } else {
    teachers = {x.teacher};
    if (method == "kd")
      make_policy = [&](Device) { return distill::kd_weighting(x.c.distill.kd_alpha); };
    else
      make_policy = [&](Device device) { return make_cnet_policy(x, device); };
  }
  return run_stage(s, x.d, teachers, make_policy, x.c.distill.tau, x.run, x.o.resume, x.stop,
                   x.o.stop_after_steps);
}

// Students from the largest (most parameters) to the smallest; ties keep their listed order.
std::vector<std::size_t> largest_first(const MethodContext& x) {
  std::vector<std::pair<std::int64_t, std::size_t>> sized;
  for (std::size_t k = 0; k < x.c.students.archs.size(); ++k) {
    Generator gen(0);
    const auto m = nn::make_model(x.c.students.archs[k],
                                  {x.train.channels, x.train.num_classes, x.train.height}, gen);
    sized.emplace_back(-nn::count_parameters(*m), k);
  }
  std::stable_sort(sized.begin(), sized.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::size_t> order;
  for (const auto& [size, k] : sized)
    order.push_back(k);
  return order;
}

// TAKD and DGKD: the students one stage ("hop") each, largest first, every hop from its
// warm-started weights on the same batches as the other methods. TAKD's guide is the model of
// the hop before (the teacher for the first); DGKD's guides are the teacher and every student
// already distilled. A guide is its hop's best-validation weights. The result lists the
// students in their configured order; its time is that of all hops, per epoch.
StageResult run_chain(const MethodContext& x, const std::string& method) {
  const std::vector<std::string>& archs = x.c.students.archs;
  std::vector<ModelSource> guides = {x.teacher};
  StageResult chain;
  chain.models.resize(archs.size());
  chain.best_checkpoints.resize(archs.size());
  std::int64_t hop = 0;
  for (std::size_t k : largest_first(x)) {
    ++hop;
    const StageSpec s = method_stage(x, fmt::format("{}_hop{}", method, hop), method, {archs[k]},
                                     {x.warm.best_checkpoints[k]});
    const std::vector<ModelSource> teachers =
        method == "takd" ? std::vector<ModelSource>{guides.back()} : guides;
    PolicyFactory make_policy;
    if (method == "takd")
      make_policy = [&](Device) { return distill::kd_weighting(x.c.distill.kd_alpha); };
    else
      make_policy = [&](Device) {
        return std::make_unique<distill::DgkdWeighting>(
            x.c.distill.kd_alpha, x.c.distill.dgkd_drop,
            static_cast<std::uint64_t>(x.c.run.seed) + 5);
      };
    const StageResult r = run_stage(s, x.d, teachers, make_policy, x.c.distill.tau, x.run,
                                    x.o.resume, x.stop, x.o.stop_after_steps);
    chain.models[k] = r.models[0];
    chain.best_checkpoints[k] = r.best_checkpoints[0];
    chain.seconds += r.seconds;
    chain.peak_bytes = std::max(chain.peak_bytes, r.peak_bytes);
    chain.device_peak_bytes = std::max(chain.device_peak_bytes, r.device_peak_bytes);
    chain.device_peak_reserved_bytes =
        std::max(chain.device_peak_reserved_bytes, r.device_peak_reserved_bytes);
    guides.push_back({archs[k], r.best_checkpoints[0]});
  }
  chain.seconds_per_epoch =
      x.c.distill.epochs > 0 ? chain.seconds / static_cast<double>(x.c.distill.epochs) : 0.0;
  return chain;
}

}  // namespace

data::TrainTest load_data(const DataConfig& c) {
  data::ReadOptions ro;
  ro.skip_bad_images = c.skip_bad_images;
  data::TrainTest t = data::load_dataset(c.dataset, c.path, ro);
  if (t.train.skipped + t.test.skipped > 0)
    fmt::print(stderr, "skipped {} undecodable training and {} test images\n", t.train.skipped,
               t.test.skipped);
  return t;
}

DataSplits make_splits(const Config& c, const data::TrainTest& dataset) {
  DataSplits d;
  d.train = &dataset.train;
  d.test = &dataset.test;
  d.split = data::train_val_split(dataset.train.size(), c.data.val_fraction,
                                  static_cast<std::uint64_t>(c.run.seed));
  if (c.data.limit_train > 0 &&
      c.data.limit_train < static_cast<std::int64_t>(d.split.train.size()))
    d.split.train.resize(static_cast<std::size_t>(c.data.limit_train));
  d.normalization = data::channel_statistics(dataset.train, d.split.train);
  d.batch_size = c.data.batch_size;
  d.eval_batch_size = c.data.eval_batch_size;
  data::Augmentation& a = d.augmentation;
  a.crop_padding = c.data.resized_crop ? 0 : c.data.crop_padding;
  a.horizontal_flip = c.data.flip;
  a.resized_crop.enabled = c.data.resized_crop;
  a.color_jitter = {c.data.jitter, c.data.jitter, c.data.jitter};
  a.cutout = {c.data.cutout > 0 ? 1 : 0, c.data.cutout};
  data::check_augmentation(a, dataset.train.channels, "data");
  d.loader_threads = c.data.loader_threads;
  return d;
}

data::NoisyLabels apply_label_noise(const Config& c, data::Dataset& train, const DataSplits& d) {
  const auto seed = static_cast<std::uint64_t>(c.run.seed) + 17;
  data::NoisyLabels noisy =
      c.data.label_noise == "symmetric"
          ? data::apply_symmetric_noise(train.labels, train.num_classes, c.data.noise_rate, seed)
          : data::apply_instance_noise(train, d.normalization, c.data.noise_rate, seed);
  // Noise on the training split only: validation (model selection, meta batches) stays clean.
  std::vector<std::int64_t> labels = noisy.clean_labels;
  for (std::int64_t i : d.split.train)
    labels[static_cast<std::size_t>(i)] = noisy.labels[static_cast<std::size_t>(i)];
  train.labels = labels;
  return noisy;
}

int run_pipeline(const Config& c, const PipelineOptions& o, const std::atomic<bool>& stop) {
  const auto wall0 = std::chrono::steady_clock::now();
  if (!std::filesystem::is_directory(c.data.path)) {
    fmt::print(stderr,
               "error: data.path {}: no such directory (install Fashion-MNIST with "
               "'apt-get install dataset-fashion-mnist' or point --data at the IDX files)\n",
               c.data.path);
    return 2;
  }
  data::TrainTest dataset;
  try {
    dataset = load_data(c.data);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: data.path {}: {}\n", c.data.path, e.what());
    return 2;
  }
  DataSplits d = make_splits(c, dataset);
  // Data parallelism: one replica per device of run.devices, averaged through their collective.
  std::unique_ptr<ReplicaGroup> replica_group;
  if (c.run.devices.size() >= 2) d.replicas = resolve_replica_devices(c.run.devices);
  if (d.replicas.size() >= 2) {
    d.device = d.replicas.front();
    replica_group = make_replica_group(d.replicas);
    d.collective = [&](int rank) -> Collective& { return replica_group->replica(rank); };
  } else {
    d.replicas.clear();
    // One device: run.device, or run.devices' first (also where its GPUs are not all usable).
    d.device = resolve_device(c.run.devices.empty() ? c.run.device : c.run.devices.front());
  }
  d.student_streams = c.run.student_streams;
  d.shared_student_streams = static_cast<std::size_t>(c.run.shared_student_streams);
  d.graphs = c.run.cuda_graphs;
  if (d.graphs && d.replicas.size() >= 2 && !d.device.is_cpu()) {
    // NCCL's guidance: with several GPUs in one process a graph capture (which synchronizes its
    // device) can wait for an all-reduce that waits for another GPU's thread.
    fmt::print(stderr, "run.devices: CUDA graphs are off with several GPUs in one process\n");
    d.graphs = false;
  }

  RunDirectory run(c.run.dir.empty() ? default_run_dir(c) : c.run.dir);
  if (c.data.label_noise != "none") {
    const data::NoisyLabels noisy = apply_label_noise(c, dataset.train, d);
    data::save_noisy_labels(run.file("noisy_labels.safetensors").string(), noisy);
    fmt::print(stderr, "label noise: {} at {:.3f} (realised {:.3f} over the training set)\n",
               noisy.kind, noisy.rate, noisy.realised_rate);
  }
  {
    std::ofstream(run.file("config.toml")) << to_toml(c);
    run.write_json("config.json", to_json(c));
    nlohmann::json split = {{"train", d.split.train}, {"val", d.split.val}};
    run.write_json("split.json", split);
  }
  fmt::print(stderr, "run directory: {}\n", run.path().string());
  const auto seed = static_cast<std::uint64_t>(c.run.seed);

  // 1. Teacher.
  ModelSummary teacher_summary{"teacher", c.teacher.arch};
  std::string teacher_path = c.teacher.checkpoint;
  if (teacher_path.empty()) {
    StageSpec s{"teacher",
                "ce",
                "teacher",
                {c.teacher.arch},
                {},
                c.teacher.epochs,
                optim_spec(c.teacher.optim),
                seed + 1,
                c.run.progress};
    StageResult r = run_stage(
        s, d, {}, [](Device) { return distill::ce_weighting(); }, c.distill.tau, run, o.resume,
        stop, o.stop_after_steps);
    teacher_summary = r.models[0];
    teacher_path = r.best_checkpoints[0];
  }
  if (!c.teacher.checkpoint.empty()) {
    const auto teacher =
        load_trained_model({c.teacher.arch, teacher_path}, dataset.train, d.device);
    std::vector<std::int64_t> test_idx(static_cast<std::size_t>(dataset.test.size()));
    for (std::size_t i = 0; i < test_idx.size(); ++i)
      test_idx[i] = static_cast<std::int64_t>(i);
    teacher_summary.best_val_acc =
        distill::evaluate(*teacher, dataset.train, d.split.val, d.normalization, d.eval_batch_size)
            .accuracy;
    teacher_summary.test_acc_best = teacher_summary.test_acc_last =
        distill::evaluate(*teacher, dataset.test, test_idx, d.normalization, d.eval_batch_size)
            .accuracy;
  }

  // 2. Students: warm start with CE, or load.
  std::vector<std::string> loaded;
  if (!c.students.checkpoint_dir.empty())
    for (const auto& arch : c.students.archs)
      loaded.push_back((std::filesystem::path(c.students.checkpoint_dir) /
                        fmt::format("student_{}.safetensors", arch))
                           .string());
  StageSpec warm{"warmstart",
                 "ce",
                 "student",
                 c.students.archs,
                 loaded,
                 loaded.empty() ? c.students.warm_start_epochs : 0,
                 optim_spec(c.students.optim),
                 seed + 2,
                 c.run.progress};
  const StageResult warm_result = run_stage(
      warm, d, {}, [](Device) { return distill::ce_weighting(); }, c.distill.tau, run, o.resume,
      stop, o.stop_after_steps);

  // 3. Each method from the same warm-started students, on the same batches.
  const MethodContext ctx{c,   d, dataset.train, {c.teacher.arch, teacher_path}, warm_result,
                          run, o, stop};
  std::vector<std::pair<std::string, StageResult>> results;
  for (const std::string& method : c.run.methods)
    results.emplace_back(method, method == "takd" || method == "dgkd" ? run_chain(ctx, method)
                                                                      : run_method(ctx, method));

  // 4. Report.
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  nlohmann::json summary =
      summary_json(c.data.dataset, joined(c.run.methods, ","), wall, {teacher_summary});
  for (const auto& [method, r] : results) {
    for (const auto& m : r.models) {
      nlohmann::json entry = model_json(m);
      entry["method"] = method;
      summary["models"].push_back(entry);
    }
    summary["stages"][method] = stage_json(r);
  }
  summary["stages"]["warmstart"] = stage_json(warm_result);
  run.write_json("summary.json", summary);
  print_table(c, teacher_summary, results);
  fmt::print("summary: {}\n", run.file("summary.json").string());
  return 0;
}

}  // namespace mcd::app
