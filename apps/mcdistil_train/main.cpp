// mcdistil_train: trains models on an image-classification dataset and writes a run
// directory (metrics.jsonl, checkpoints, config.json, summary.json). This first form trains
// one model with cross-entropy; exit code 2 means bad flags or paths.
#include <omp.h>

#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <mcd/data/idx.h>
#include <mcd/engine/error.h>
#include <mcd/models/registry.h>

#include "run_files.h"
#include "train_classifier.h"

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) {
  g_stop.store(true);
}

std::string default_run_dir(const std::string& method) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return fmt::format("runs/{}-{}", stamp, method);
}

void print_table(const std::vector<mcd::app::ModelSummary>& models) {
  fmt::print("\n{:<8} {:<16} {:>6} {:>10} {:>14} {:>14}\n", "role", "arch", "epochs", "best val",
             "test @best", "test @last");
  for (const auto& m : models)
    fmt::print("{:<8} {:<16} {:>6} {:>10.4f} {:>14.4f} {:>14.4f}\n", m.role, m.arch, m.epochs,
               m.best_val_acc, m.test_acc_best, m.test_acc_last);
}

}  // namespace

int main(int argc, char** argv) {
  mcd::app::ClassifierConfig c;
  std::string dataset = "fashion-mnist";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string method = "ce";
  std::string run_dir;
  double val_fraction = 0.1;
  std::int64_t limit_train = 0;
  int threads = 0;
  bool resume = false, no_progress = false;

  CLI::App app{"mcdistil_train: train image classifiers (CE now; KD and MC-Distil to come)"};
  app.add_option("--dataset", dataset, "Dataset name")
      ->check(CLI::IsMember({"fashion-mnist", "mnist"}))
      ->capture_default_str();
  app.add_option("--data", data_dir, "Directory with the gzip IDX files")->capture_default_str();
  app.add_option("--method", method, "Training method")
      ->check(CLI::IsMember({"ce"}))
      ->capture_default_str();
  app.add_option("--arch", c.arch, "Model architecture (see --list-models)")->capture_default_str();
  app.add_option("--epochs", c.epochs, "Training epochs")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--batch-size", c.batch_size, "Training batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--eval-batch-size", c.eval_batch_size, "Evaluation batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--lr", c.lr, "Initial SGD learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--momentum", c.momentum, "SGD momentum")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "SGD weight decay")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--nesterov", c.nesterov, "Nesterov momentum");
  app.add_option("--schedule", c.schedule, "Learning-rate schedule over epochs")
      ->check(CLI::IsMember({"cosine", "step", "constant"}))
      ->capture_default_str();
  app.add_option("--step-size", c.step_size, "Epochs between decays (step schedule)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--gamma", c.gamma, "Decay factor (step schedule)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--crop-padding", c.crop_padding, "Random-crop padding in pixels (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--flip", c.horizontal_flip, "Random horizontal flip (true/false)")
      ->capture_default_str();
  app.add_option("--val-fraction", val_fraction,
                 "Fraction of the training set held out for validation")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  app.add_option("--limit-train", limit_train,
                 "Use only the first N training images of the split (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", c.seed, "Seed for initialisation, split, shuffling and augmentation")
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--run-dir", run_dir, "Run directory (default: runs/<time>-<method>)");
  app.add_flag("--resume", resume, "Continue the run in --run-dir from its last checkpoint");
  app.add_flag("--no-progress", no_progress, "Do not draw the progress bar");
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
  c.progress = !no_progress;
  if (resume && run_dir.empty()) {
    fmt::print(stderr, "error: --resume needs --run-dir naming the run to continue\n");
    return 2;
  }
  if (threads > 0) omp_set_num_threads(threads);
  std::signal(SIGINT, on_sigint);

  try {
    const auto names = mcd::nn::model_names();
    if (std::find(names.begin(), names.end(), c.arch) == names.end()) {
      fmt::print(stderr, "error: --arch '{}' is not a registered model; see --list-models\n",
                 c.arch);
      return 2;
    }
    if (!std::filesystem::is_directory(data_dir)) {
      fmt::print(stderr,
                 "error: --data {}: no such directory (install Fashion-MNIST with "
                 "'apt-get install dataset-fashion-mnist' or point --data at the IDX files)\n",
                 data_dir);
      return 2;
    }
    const auto wall0 = std::chrono::steady_clock::now();
    mcd::data::TrainTest data;
    try {
      data = mcd::data::load_fashion_mnist(data_dir);
    } catch (const std::exception& e) {
      fmt::print(stderr, "error: --data {}: {}\n", data_dir, e.what());
      return 2;
    }
    mcd::app::DataSplits d;
    d.train = &data.train;
    d.test = &data.test;
    d.split = mcd::data::train_val_split(data.train.size(), val_fraction, c.seed);
    if (limit_train > 0 && limit_train < static_cast<std::int64_t>(d.split.train.size()))
      d.split.train.resize(static_cast<std::size_t>(limit_train));
    d.normalization = mcd::data::channel_statistics(data.train, d.split.train);

    mcd::app::RunDirectory run(run_dir.empty() ? default_run_dir(method) : run_dir);
    run.write_json(resume ? "config.resumed.json" : "config.json",
                   {{"dataset", dataset},
                    {"data", data_dir},
                    {"method", method},
                    {"arch", c.arch},
                    {"epochs", c.epochs},
                    {"batch_size", c.batch_size},
                    {"lr", c.lr},
                    {"momentum", c.momentum},
                    {"weight_decay", c.weight_decay},
                    {"nesterov", c.nesterov},
                    {"schedule", c.schedule},
                    {"crop_padding", c.crop_padding},
                    {"flip", c.horizontal_flip},
                    {"val_fraction", val_fraction},
                    {"limit_train", limit_train},
                    {"seed", c.seed},
                    {"threads", omp_get_max_threads()},
                    {"train_images", d.split.train.size()},
                    {"val_images", d.split.val.size()},
                    {"test_images", data.test.size()}});
    fmt::print(stderr, "run directory: {}\n", run.path().string());

    std::vector<mcd::app::ModelSummary> models;
    models.push_back(mcd::app::train_classifier(c, d, run, resume, g_stop));
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    run.write_json("summary.json", mcd::app::summary_json(dataset, method, wall, models));
    print_table(models);
    fmt::print("summary: {}\n", run.file("summary.json").string());
    return 0;
  } catch (const mcd::app::Interrupted&) {
    return 130;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
