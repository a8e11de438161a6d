// mcdistil_train: teacher -> CE warm start -> CE / KD / MC-Distil students on an image
// classification dataset, configured by a TOML file and command-line overrides. Exit status:
// 0 done, 1 failure, 2 bad flags, configuration or paths, 130 interrupted (resumable).
#include <omp.h>

#include <csignal>
#include <filesystem>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <mcd/engine/error.h>
#include <mcd/models/registry.h>

#include "config.h"
#include "pipeline.h"
#include "stage.h"

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) {
  g_stop.store(true);
}
}  // namespace

int main(int argc, char** argv) {
  std::string config_path, run_dir, data_dir, dataset, method, seed;
  std::vector<std::string> overrides;
  std::int64_t threads = -1, stop_after = 0;
  bool resume = false, no_progress = false, inspect = false, skip_bad_images = false;

  CLI::App app{
      "mcdistil_train: trains a teacher, warm-starts several students with CE, then distils them\n"
      "with each method of run.methods (ce, kd, takd, dgkd, mcdistil) and prints each student's "
      "test "
      "accuracy.\n"
      "With no arguments it runs the embedded default on Fashion-MNIST.\n"};
  app.set_help_flag("-h,--help", "Print this help (all configuration keys are listed by --keys)");
  app.add_option("-c,--config", config_path, "TOML configuration file")->check(CLI::ExistingFile);
  app.add_option("--set", overrides,
                 "Override a configuration key: section.key=value (repeatable), e.g. "
                 "--set distill.tau=4 --set 'students.archs=[\"resnet10_xs\"]'");
  app.add_option("--data", data_dir, "Dataset directory (data.path)");
  app.add_option("--dataset", dataset,
                 "Dataset format (data.dataset): fashion-mnist, mnist, cifar10, cifar100, "
                 "cifar100-coarse, tiny-imagenet, imagefolder");
  app.add_flag("--skip-bad-images", skip_bad_images,
               "Skip and count undecodable images instead of stopping (data.skip_bad_images)");
  app.add_flag("--inspect", inspect,
               "Print the dataset's split sizes, classes, shape and training-split channel mean "
               "and std as one JSON object, and exit");
  app.add_option("--method", method,
                 "Run only this method (run.methods=[...]): ce, kd, takd, dgkd or mcdistil")
      ->check(CLI::IsMember({"ce", "kd", "mcdistil"}));
  app.add_option("--seed", seed,
                 "Seed for initialisation, split, shuffling and augmentation (run.seed)");
  app.add_option("--threads", threads, "CPU threads, 0 = all cores (run.threads)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--run-dir", run_dir, "Run directory (run.dir; default runs/<time>-<methods>)");
  app.add_flag("--resume", resume, "Continue the run in --run-dir from its checkpoints");
  app.add_flag("--no-progress", no_progress, "Do not draw progress bars (run.progress=false)");
  app.add_option(
         "--stop-after-steps", stop_after,
         "Checkpoint and stop as if interrupted after N training steps (for testing resume)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag_callback(
      "--keys",
      [] {
        fmt::print("{}", mcd::app::describe_keys());
        throw CLI::Success();
      },
      "Print every configuration key with its type, default and meaning, and exit");
  app.add_flag_callback(
      "--list-models",
      [] {
        for (const auto& n : mcd::nn::model_names())
          fmt::print("{}\n", n);
        throw CLI::Success();
      },
      "Print the registered architectures and exit");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (resume && run_dir.empty()) {
    fmt::print(stderr, "error: --resume needs --run-dir naming the run to continue\n");
    return 2;
  }
  // Flags are shorthands for keys; --set comes last and wins.
  std::vector<std::string> all;
  if (!data_dir.empty()) all.push_back("data.path=" + data_dir);
  if (!dataset.empty()) all.push_back("data.dataset=" + dataset);
  if (skip_bad_images) all.push_back("data.skip_bad_images=true");
  if (!method.empty()) all.push_back("run.methods=[\"" + method + "\"]");
  if (!seed.empty()) all.push_back("run.seed=" + seed);
  if (threads >= 0) all.push_back("run.threads=" + std::to_string(threads));
  if (!run_dir.empty()) all.push_back("run.dir=" + run_dir);
  if (no_progress) all.push_back("run.progress=false");
  all.insert(all.end(), overrides.begin(), overrides.end());
  if (resume) {
    // A resumed run continues with the configuration it started with.
    const auto saved = std::filesystem::path(run_dir) / "config.toml";
    if (!std::filesystem::exists(saved)) {
      fmt::print(stderr, "error: --resume: {} does not exist (is --run-dir a run directory?)\n",
                 saved.string());
      return 2;
    }
    if (!config_path.empty())
      fmt::print(stderr, "note: --resume uses {}; --config is ignored\n", saved.string());
    config_path = saved.string();
  }

  mcd::app::Config config;
  try {
    config = mcd::app::load_config(config_path, all);
    const auto names = mcd::nn::model_names();
    auto known = [&](const std::string& a) {
      return std::find(names.begin(), names.end(), a) != names.end();
    };
    std::vector<std::string> archs = config.students.archs;
    archs.push_back(config.teacher.arch);
    archs.push_back(config.cnet.backbone);
    for (const auto& a : archs)
      if (!known(a))
        throw mcd::app::ConfigError(
            fmt::format("'{}' is not a registered model; see --list-models", a));
  } catch (const mcd::app::ConfigError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  if (config.run.threads > 0) omp_set_num_threads(static_cast<int>(config.run.threads));
  if (inspect) {
    try {
      const mcd::data::TrainTest data = mcd::app::load_data(config.data);
      const mcd::app::DataSplits d = mcd::app::make_splits(config, data);
      fmt::print("{}\n", mcd::data::inspect(data, d.split).dump());
      return 0;
    } catch (const std::exception& e) {
      fmt::print(stderr, "error: data.path {}: {}\n", config.data.path, e.what());
      return 2;
    }
  }
  std::signal(SIGINT, on_sigint);
  std::signal(SIGTERM, on_sigint);
  try {
    return mcd::app::run_pipeline(config, {resume, stop_after}, g_stop);
  } catch (const mcd::app::Interrupted&) {
    return 130;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
