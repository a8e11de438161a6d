// Times a full training step (forward, cross-entropy, backward, SGD update) of registered
// models on the CPU and reports images/s and GFLOP/s against the machine's float32 peak (the
// forward's conv and linear MACs measured by nn::count_macs).
// Output: one JSON object per line, then a short table. A training step counts 3x the
// forward FLOPs (forward, backward-data, backward-weight).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <omp.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <mcd/engine/allocator.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/kernels/cpu/gemm.h>
#include <mcd/models/model_stats.h>
#include <mcd/models/registry.h>


namespace {

struct Result {
  std::string arch, input;
  double ms_per_step, images_per_second, gflops;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> archs = {"resnet10_s", "resnet10_m"};
  std::vector<std::string> inputs = {"1x28x28", "3x32x32"};
  std::int64_t batch = 128, steps = 5, classes = 10;
  double peak_gflops = 270.0;
  int threads = 0;
  CLI::App app{"Training-step benchmark (CPU)"};
  app.add_option("--arch", archs, "Architectures")->capture_default_str();
  app.add_option("--input", inputs, "Input shapes CxHxW")->capture_default_str();
  app.add_option("--batch", batch, "Batch size")->capture_default_str();
  app.add_option("--steps", steps, "Timed steps (median reported)")->capture_default_str();
  app.add_option("--classes", classes, "Classes")->capture_default_str();
  app.add_option("--threads", threads, "Threads (0: all)")->capture_default_str();
  app.add_option("--peak-gflops", peak_gflops, "Float32 peak of this machine")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);

  std::vector<Result> results;
  for (const auto& in : inputs) {
    std::int64_t c = 0, h = 0, w = 0;
    if (std::sscanf(in.c_str(), "%ldx%ldx%ld", &c, &h, &w) != 3) {
      fmt::print(stderr, "--input: expected CxHxW, got '{}'\n", in);
      return 2;
    }
    for (const auto& arch : archs) {
      mcd::Generator gen(0);
      const mcd::nn::ModelConfig config{c, classes, h};
      auto model = mcd::nn::make_model(arch, config, gen);
      // The forward's conv and linear MACs, measured (any registered architecture).
      const double forward_macs = mcd::nn::count_macs(*model, config);
      model->train();
      mcd::optim::SgdOptions so;
      so.lr = 0.01;
      so.momentum = 0.9;
      so.weight_decay = 5e-4;
      mcd::optim::Sgd opt(model->parameters(), so);
      const mcd::Tensor x = mcd::Tensor::randn({batch, c, h, w}, gen);
      std::vector<std::int64_t> y(static_cast<std::size_t>(batch));
      for (auto& v : y)
        v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(classes)));
      const mcd::Tensor labels = mcd::Tensor::from_vector(y, {batch});
      auto step = [&] {
        opt.zero_grad();
        mcd::mean(mcd::cross_entropy((*model)(x), labels)).backward();
        opt.step();
      };
      // Warm-up: allocations and first touch. Two steps: the optimizer's state, made in the
      // first step's update, takes cached blocks of sizes the next forward needs again.
      step();
      step();
      std::vector<double> times;
      const auto before = mcd::host_memory_stats();
      for (std::int64_t i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        step();
        times.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      const double t = median(times);
      const auto after = mcd::host_memory_stats();
      const double flops = 3.0 * 2.0 * forward_macs * static_cast<double>(batch);
      results.push_back({arch, in, t * 1e3, static_cast<double>(batch) / t, flops / t * 1e-9});
      const auto& r = results.back();
      nlohmann::json j = {
          {"bench", "train_step"},
          {"arch", arch},
          {"input", in},
          {"batch", batch},
          {"threads", omp_get_max_threads()},
          {"gemm", mcd::kernels::cpu::gemm_variant()},
          {"ms_per_step", r.ms_per_step},
          {"images_per_second", r.images_per_second},
          {"gflops", r.gflops},
          {"fraction_of_peak", r.gflops / peak_gflops},
          {"peak_allocated_bytes", after.peak_allocated_bytes},
          {"reserved_bytes", after.reserved_bytes},
          {"system_allocations_per_step",
           static_cast<double>(after.system_allocations - before.system_allocations) /
               static_cast<double>(steps)}};
      fmt::print("{}\n", j.dump());
      std::fflush(stdout);
    }
  }
  fmt::print("\n{:<14} {:<9} {:>10} {:>10} {:>9} {:>7}\n", "arch", "input", "ms/step", "img/s",
             "GFLOP/s", "%peak");
  for (const auto& r : results)
    fmt::print("{:<14} {:<9} {:>10.1f} {:>10.0f} {:>9.1f} {:>6.1f}%\n", r.arch, r.input,
               r.ms_per_step, r.images_per_second, r.gflops, 100.0 * r.gflops / peak_gflops);
  return 0;
}
