// Times whole MC-Distil iterations of the trainer (distill::Trainer with the C-Net policy):
// the frozen teacher's forward, every student's forward, the C-Net's weights, the fused loss,
// backward and SGD step per student, and every L-th iteration the lookahead meta step first.
// Reported: the median plain iteration, the median iteration with a meta step, the amortised
// iteration ((L - 1) plain + 1 meta) / L, the meta step's cost in plain iterations, the
// amortised overhead over a KD iteration (same models, no C-Net), and peak host memory. On a
// device also two meta intervals queued back to back from host batches, the app's way.
// The peer is benchmarks/torch_mcdistil_peer.py with the same arguments. --schedules times the
// trainer's schedules in one run: lanes+graphs (each student on a stream of its own, repeated
// steps replayed as CUDA graphs: the default), lanes, graphs, serial (one stream, no graphs),
// lanes2+graphs (the students on two streams balanced by size);
// the first one listed gives the top-level numbers.
// Runs on the CPU or, with --device cuda, on GPU 0. Output: one JSON object, then a table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <omp.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#ifdef MCD_HAVE_CUDA
#include <cuda_profiler_api.h>

#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/library_handles.h>
#endif

#include <mcd/data/loader.h>
#include <mcd/distill/trainer.h>
#include <mcd/engine/allocator.h>
#include <mcd/engine/device_backend.h>
#include <mcd/engine/generator.h>
#include <mcd/models/cnet.h>
#include <mcd/models/registry.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string teacher = "resnet10";
  std::vector<std::string> students = {"resnet10_xxxs", "resnet10_xxs", "resnet10_xs", "resnet10_s",
                                       "resnet10_m"};
  std::string cnet = "resnet10_s";
  std::int64_t batch = 400, image = 32, channels = 3, classes = 100, interval = 20;
  std::int64_t iterations = 0;  // 0: two meta intervals plus one iteration
  double tau = 4.0;
  mcd::Device device;
  bool concurrent = true;  // students on streams of their own (Trainer::set_concurrent_students)
  bool graphs = true;      // repeated steps replayed as graphs (Trainer::set_graphs)
  std::size_t shared_lanes = 0;  // Trainer::set_shared_student_streams
};

// Waits for the device's queued work, so that host clocks time the whole step.
void synchronize(mcd::Device device) {
  if (!device.is_cpu()) mcd::require_device_backend(device, "bench").synchronize(device.index);
}

// Opens or closes the profiler's range around the timed iterations, for a profiler started with
// it closed (Nsight Compute's --profile-from-start off): the warm-up, the convolution algorithm
// search and the captures stay out of the profile. Nothing without a profiler attached.
void profiler_range(mcd::Device device, bool open) {
#ifdef MCD_HAVE_CUDA
  if (device.is_cpu()) return;
  (void)(open ? cudaProfilerStart() : cudaProfilerStop());
  (void)cudaGetLastError();
#else
  (void)device;
  (void)open;
#endif
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Random images: the step's cost does not depend on the pixel values.
mcd::data::Dataset synthetic(const Options& o, std::int64_t n) {
  mcd::data::Dataset d;
  d.name = "synthetic";
  d.channels = o.channels;
  d.height = d.width = o.image;
  d.num_classes = o.classes;
  mcd::Generator gen(7);
  d.pixels.resize(static_cast<std::size_t>(n * d.image_numel()));
  for (auto& p : d.pixels)
    p = static_cast<std::uint8_t>(gen.below(256));
  for (std::int64_t i = 0; i < n; ++i)
    d.labels.push_back(static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(o.classes))));
  return d;
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = i;
  return v;
}

struct Timings {
  std::vector<double> plain, meta;  // seconds per iteration
  std::int64_t peak_bytes = 0;
  std::int64_t peak_reserved_bytes = 0;  // the device's caching allocator (graphs keep a pool)
  std::int64_t replayed = 0;             // timed iterations run by replaying a graph
  std::int64_t meta_replayed = 0;        // timed meta steps run by replaying a graph
  // On a device: 2L iterations back to back (two meta steps) from batches on the host, as the
  // app runs them (deferred meters, uploads that do not wait), seconds per iteration; 0 on
  // the CPU.
  double pipelined = 0.0;
};

// Times 2L iterations queued back to back from batches built on the host beforehand (as the
// app's prefetching loader delivers them), with the trainer's deferred meters: the host waits
// for a step's meters only after it has queued the next step, so the gaps the per-step timing
// leaves between iterations (the batch's upload, the meters' read) are hidden when the trainer
// manages to hide them.
// Includes every batch's copy to the device, which the per-step timing excludes.
double time_pipelined(mcd::distill::Trainer& trainer, const Options& o,
                      const std::vector<mcd::data::Batch>& host_batches) {
  trainer.set_deferred_meters(true);
  const std::int64_t L = o.interval;
  trainer.set_iteration((trainer.iteration() / L + 1) * L);  // starts with a meta iteration
  synchronize(o.device);
  const auto t0 = Clock::now();
  for (std::int64_t i = 0; i < 2 * L; ++i)
    trainer.step(host_batches[static_cast<std::size_t>(i) % host_batches.size()]);
  trainer.flush_meters();
  synchronize(o.device);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  trainer.set_deferred_meters(false);
  return seconds / static_cast<double>(2 * L);
}

// Runs `iterations` iterations (after one warm-up iteration that is not timed) and splits
// the times by whether the iteration ran a meta step (iteration % L == 0 under the C-Net).
Timings run(const Options& o, bool mcdistil, const mcd::data::Dataset& data) {
  const mcd::nn::ModelConfig mc{o.channels, o.classes, o.image};
  mcd::Generator gen(1);
  auto teacher = mcd::nn::make_model(o.teacher, mc, gen);
  teacher->to(o.device);
  std::vector<mcd::distill::Student> students;
  for (const auto& arch : o.students) {
    mcd::distill::Student s;
    s.name = arch;
    s.model = mcd::nn::make_model(arch, mc, gen);
    s.model->to(o.device);  // before the optimizer holds any state
    mcd::optim::SgdOptions so;
    so.lr = 0.05;
    so.momentum = 0.9;
    so.weight_decay = 5e-4;
    s.optimizer = std::make_unique<mcd::optim::Sgd>(s.model->parameters(), so);
    students.push_back(std::move(s));
  }
  mcd::data::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.normalization = {std::vector<float>(static_cast<std::size_t>(o.channels), 127.5f),
                      std::vector<float>(static_cast<std::size_t>(o.channels), 64.0f)};
  const std::int64_t n = o.batch * 4;
  std::unique_ptr<mcd::distill::WeightingPolicy> policy;
  if (mcdistil) {
    mcd::nn::CNetConfig cc;
    cc.num_students = static_cast<std::int64_t>(o.students.size());
    cc.backbone = o.cnet;
    cc.image = {o.channels, 0, o.image};
    auto cnet = std::make_shared<mcd::nn::CNet>(cc, gen);
    cnet->to(o.device);
    policy = std::make_unique<mcd::distill::CNetWeighting>(
        cnet, mcd::optim::AdamOptions{}, o.interval, mcd::data::BatchIterator(data, iota(n), lo),
        true);
  } else {
    policy = mcd::distill::kd_weighting(0.5);
  }
  mcd::distill::Trainer trainer(students, teacher, std::move(policy), o.tau);
  trainer.set_concurrent_students(o.concurrent);
  trainer.set_graphs(o.graphs);
  trainer.set_shared_student_streams(o.shared_lanes);
  mcd::data::BatchIterator train(data, iota(n), lo);
  auto next_batch = [&] {
    mcd::data::Batch b;
    if (!train.next(b)) {
      train.start_epoch(train.epoch() + 1);
      train.next(b);
    }
    return b;
  };
  // Warm-up: plain iterations until the caching allocator holds every block size (iteration
  // 0 would be a meta one, so start at 1) and the step's graph is captured, then two meta
  // iterations (the meta step's first, eager, and its capture), which are not timed.
  trainer.set_iteration(1);
  for (int i = 0; i < 3; ++i)
    trainer.step(next_batch());
  if (mcdistil)
    for (std::int64_t m = 1; m <= 2; ++m) {
      trainer.set_iteration(m * o.interval);
      trainer.step(next_batch());
    }
  synchronize(o.device);
  mcd::reset_peak_host_memory();
#ifdef MCD_HAVE_CUDA
  if (!o.device.is_cpu())
    mcd::kernels::cuda::DeviceAllocator::for_device(o.device.index).reset_peak();
#endif
  Timings t;
  const std::int64_t replayed_before = trainer.replayed_steps();
  const std::int64_t meta_replayed_before = trainer.replayed_meta_steps();
  const std::int64_t iterations = o.iterations > 0 ? o.iterations : 2 * o.interval + 1;
  profiler_range(o.device, true);
  for (std::int64_t i = 0; i < iterations; ++i) {
    const bool meta = mcdistil && trainer.iteration() % o.interval == 0;
    // Batch assembly and the copy to the device are not part of the step: the batch is on the
    // device before the clock starts, as the peer's batches are.
    mcd::data::Batch b = next_batch();
    b.images = b.images.to(o.device);
    b.labels = b.labels.to(o.device);
    synchronize(o.device);
    const auto t0 = Clock::now();
    trainer.step(b);
    synchronize(o.device);
    (meta ? t.meta : t.plain).push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  profiler_range(o.device, false);
  // Peak memory where the models live: the host allocator, or the device's caching allocator.
  t.peak_bytes = mcd::host_memory_stats().peak_allocated_bytes;
#ifdef MCD_HAVE_CUDA
  if (!o.device.is_cpu()) {
    const auto st = mcd::kernels::cuda::DeviceAllocator::for_device(o.device.index).stats();
    t.peak_bytes = st.peak_allocated_bytes;
    t.peak_reserved_bytes = st.peak_reserved_bytes;
  }
#endif
  t.replayed = trainer.replayed_steps() - replayed_before;
  t.meta_replayed = trainer.replayed_meta_steps() - meta_replayed_before;
  if (!o.device.is_cpu()) {
    std::vector<mcd::data::Batch> host_batches;
    for (int i = 0; i < 4; ++i)
      host_batches.push_back(next_batch());
    t.pipelined = time_pipelined(trainer, o, host_batches);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  int threads = 0;
  CLI::App app{"MC-Distil iteration benchmark"};
  app.add_option("--teacher", o.teacher, "Teacher architecture")->capture_default_str();
  app.add_option("--students", o.students, "Student architectures")->capture_default_str();
  app.add_option("--cnet", o.cnet, "C-Net backbone")->capture_default_str();
  app.add_option("--batch", o.batch, "Batch size")->capture_default_str();
  app.add_option("--image", o.image, "Image side (pixels)")->capture_default_str();
  app.add_option("--channels", o.channels, "Image channels")->capture_default_str();
  app.add_option("--classes", o.classes, "Classes")->capture_default_str();
  app.add_option("--interval", o.interval, "Meta interval L")->capture_default_str();
  app.add_option("--iterations", o.iterations, "Timed iterations (0: 2L + 1)")
      ->capture_default_str();
  app.add_option("--threads", threads, "Threads (0: all)")->capture_default_str();
  std::string device = "cpu";
  std::vector<std::string> schedules = {"lanes+graphs"};
  app.add_option("--schedules", schedules,
                 "trainer schedules to time in this run: lanes+graphs, lanes, graphs, serial, "
                 "lanes2+graphs (the students on two streams, the teacher and the C-Net on the "
                 "lighter one) (the first gives the top-level numbers)")
      ->check(CLI::IsMember({"lanes+graphs", "lanes", "graphs", "serial", "lanes2+graphs"}))
      ->capture_default_str();
  bool tf32 = false;
  app.add_flag("--tf32", tf32, "CUDA: TF32 tensor-core math in float32 GEMMs and convolutions");
  app.add_option("--device", device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (device == "cuda") {
#ifdef MCD_HAVE_CUDA
    if (!mcd::kernels::cuda::install_cuda_backend()) {
      fmt::print("SKIP: no CUDA device\n");
      return 77;
    }
    o.device = mcd::Device::cuda(0);
    mcd::kernels::cuda::set_allow_tf32(tf32);
#else
    fmt::print(stderr, "--device cuda: this build has no CUDA backend\n");
    return 2;
#endif
  }
  if (threads > 0) omp_set_num_threads(threads);

  const mcd::data::Dataset data = synthetic(o, o.batch * 4);
  const double L = static_cast<double>(o.interval);
  struct Result {
    Timings kd, mc;
    double kd_s, plain_s, meta_s, amortised_s;
    // Over two meta intervals queued back to back from host batches (0 on the CPU).
    double kd_pipelined_s, pipelined_s;
  };
  auto time_schedule = [&](const std::string& schedule) {
    Options so = o;
    so.concurrent =
        schedule == "lanes+graphs" || schedule == "lanes" || schedule == "lanes2+graphs";
    so.graphs = schedule == "lanes+graphs" || schedule == "graphs" || schedule == "lanes2+graphs";
    so.shared_lanes = schedule == "lanes2+graphs" ? 2 : 0;
    Result r;
    r.kd = run(so, false, data);
    r.mc = run(so, true, data);
    r.kd_s = median(r.kd.plain);
    r.plain_s = median(r.mc.plain);
    r.meta_s = median(r.mc.meta);
    r.amortised_s = ((L - 1.0) * r.plain_s + r.meta_s) / L;
    r.kd_pipelined_s = r.kd.pipelined;
    r.pipelined_s = r.mc.pipelined;
    return r;
  };
  std::vector<Result> results;
  for (const std::string& s : schedules)
    results.push_back(time_schedule(s));
  const Result& main_result = results.front();
  const Timings& kd = main_result.kd;
  const Timings& mc = main_result.mc;
  const double kd_s = main_result.kd_s, plain_s = main_result.plain_s, meta_s = main_result.meta_s,
               amortised_s = main_result.amortised_s;
  nlohmann::json j = {{"bench", "mcdistil_step"},
                      {"device", o.device.str()},
                      {"tf32", tf32},
                      {"threads", omp_get_max_threads()},
                      {"teacher", o.teacher},
                      {"students", o.students},
                      {"cnet", o.cnet},
                      {"batch", o.batch},
                      {"input", fmt::format("{}x{}x{}", o.channels, o.image, o.image)},
                      {"classes", o.classes},
                      {"interval", o.interval},
                      {"kd_iteration_ms", kd_s * 1e3},
                      {"plain_iteration_ms", plain_s * 1e3},
                      {"meta_iteration_ms", meta_s * 1e3},
                      {"amortised_iteration_ms", amortised_s * 1e3},
                      {"meta_step_in_plain_iterations", (meta_s - plain_s) / plain_s},
                      {"amortised_overhead_over_kd", amortised_s / kd_s - 1.0},
                      {"kd_peak_bytes", kd.peak_bytes},
                      {"mcdistil_peak_bytes", mc.peak_bytes},
                      {"kd_peak_reserved_bytes", kd.peak_reserved_bytes},
                      {"mcdistil_peak_reserved_bytes", mc.peak_reserved_bytes},
                      {"schedule", schedules.front()},
                      {"replayed_iterations", kd.replayed + mc.replayed},
                      {"replayed_meta_iterations", mc.meta_replayed}};
  // Only where a device runs beside the host; the CPU has nothing to overlap.
  if (!o.device.is_cpu()) {
    j["kd_pipelined_iteration_ms"] = main_result.kd_pipelined_s * 1e3;
    j["pipelined_amortised_iteration_ms"] = main_result.pipelined_s * 1e3;
  }
  // Every schedule, and each one's speed against the serial one where it was timed.
  const auto serial = std::find(schedules.begin(), schedules.end(), "serial");
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    const Result& r = results[i];
    nlohmann::json e = {{"kd_iteration_ms", r.kd_s * 1e3},
                        {"plain_iteration_ms", r.plain_s * 1e3},
                        {"meta_iteration_ms", r.meta_s * 1e3},
                        {"amortised_iteration_ms", r.amortised_s * 1e3},
                        {"mcdistil_peak_bytes", r.mc.peak_bytes},
                        {"mcdistil_peak_reserved_bytes", r.mc.peak_reserved_bytes},
                        {"replayed_iterations", r.kd.replayed + r.mc.replayed},
                        {"replayed_meta_iterations", r.mc.meta_replayed}};
    if (!o.device.is_cpu()) {
      e["kd_pipelined_iteration_ms"] = r.kd_pipelined_s * 1e3;
      e["pipelined_amortised_iteration_ms"] = r.pipelined_s * 1e3;
    }
    if (serial != schedules.end()) {
      const Result& s = results[static_cast<std::size_t>(serial - schedules.begin())];
      e["kd_speedup_over_serial"] = s.kd_s / r.kd_s;
      e["amortised_speedup_over_serial"] = s.amortised_s / r.amortised_s;
    }
    j["schedules"][schedules[i]] = e;
  }
  fmt::print("{}\n", j.dump());
  fmt::print("\n{:<28} {:>10}\n", fmt::format("MC-Distil iteration ({})", o.device.str()), "ms");
  fmt::print("{:<28} {:>10.1f}\n", "KD iteration", kd_s * 1e3);
  fmt::print("{:<28} {:>10.1f}\n", "plain (C-Net weights)", plain_s * 1e3);
  fmt::print("{:<28} {:>10.1f}\n", "with meta step", meta_s * 1e3);
  fmt::print("{:<28} {:>10.1f}\n", fmt::format("amortised, L = {}", o.interval), amortised_s * 1e3);
  fmt::print("meta step = {:.2f} plain iterations; amortised overhead over KD {:+.1f}%\n",
             (meta_s - plain_s) / plain_s, 100.0 * (amortised_s / kd_s - 1.0));
  if (!o.device.is_cpu())
    fmt::print("back to back from host batches: KD {:.1f} ms, amortised {:.1f} ms\n",
               main_result.kd_pipelined_s * 1e3, main_result.pipelined_s * 1e3);
  if (schedules.size() > 1) {
    fmt::print("\n{:<14} {:>8} {:>12} {:>10} {:>8}\n", "schedule", "KD ms", "amortised ms",
               "replayed", "(meta)");
    for (std::size_t i = 0; i < schedules.size(); ++i)
      fmt::print("{:<14} {:>8.1f} {:>12.1f} {:>10} {:>8}\n", schedules[i], results[i].kd_s * 1e3,
                 results[i].amortised_s * 1e3, results[i].kd.replayed + results[i].mc.replayed,
                 results[i].mc.meta_replayed);
  }
  return 0;
}
