#include "stage.h"

#include <chrono>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <mcd/data/loader.h>
#include <mcd/data/prefetch_loader.h>
#include <mcd/distill/classification.h>
#include <mcd/engine/allocator.h>
#include <mcd/engine/device_backend.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/safetensors.h>
#include <mcd/models/registry.h>

#include "progress.h"
#include "replica_threads.h"

namespace mcd::app {
namespace {

std::unique_ptr<optim::LrSchedule> make_schedule(const OptimSpec& o, std::int64_t epochs) {
  if (o.schedule == "cosine")
    return std::make_unique<optim::CosineAnnealing>(o.lr, std::max<std::int64_t>(epochs, 1), 0.0);
  if (o.schedule == "step") return std::make_unique<optim::StepDecay>(o.lr, o.step_size, o.gamma);
  if (o.schedule == "constant") return std::make_unique<optim::Constant>(o.lr);
  fail("schedule: expected cosine, step or constant, got '{}'", o.schedule);
}

// Where the stage stands; saved in the last checkpoint's metadata.
struct Progress {
  std::int64_t epoch = 0, batch = 0, iteration = 0;
  double seconds = 0.0;
  std::vector<ModelSummary> models;
};

std::string hex(double v) {
  return fmt::format("{:a}", v);
}
double unhex(const std::string& s) {
  return std::strtod(s.c_str(), nullptr);
}

std::string last_path(const RunDirectory& run, const StageSpec& s) {
  return run.file(s.name + "_last.safetensors").string();
}

std::string best_path(const RunDirectory& run, const StageSpec& s, std::size_t k) {
  return run.file(fmt::format("{}_{}_{}_best.safetensors", s.name, k, s.archs[k])).string();
}

void save_checkpoint(const RunDirectory& run, const StageSpec& spec, distill::Trainer& trainer,
                     const Progress& p) {
  trainer.flush_meters();  // the checkpoint holds every step's meters up to p
  StateDict all;
  auto& students = trainer.students();
  for (std::size_t k = 0; k < students.size(); ++k) {
    for (const auto& [key, t] : students[k].model->state_dict())
      all[fmt::format("model{}.{}", k, key)] = t;
    for (const auto& [key, t] : students[k].optimizer->state_dict())
      all[fmt::format("optim{}.{}", k, key)] = t;
    const std::vector<double> meters = students[k].meters.to_vector();
    all[fmt::format("meters{}", k)] =
        Tensor::from_vector(meters, {static_cast<std::int64_t>(meters.size())});
  }
  for (const auto& [key, t] : trainer.policy().state_dict())
    all["policy." + key] = t;
  std::map<std::string, std::string> meta = {{"stage", spec.name},
                                             {"method", spec.method},
                                             {"epoch", std::to_string(p.epoch)},
                                             {"batch", std::to_string(p.batch)},
                                             {"iteration", std::to_string(p.iteration)},
                                             {"seconds", hex(p.seconds)},
                                             {"models", std::to_string(p.models.size())}};
  for (std::size_t k = 0; k < p.models.size(); ++k) {
    const ModelSummary& m = p.models[k];
    meta[fmt::format("arch{}", k)] = m.arch;
    meta[fmt::format("best_val{}", k)] = hex(m.best_val_acc);
    meta[fmt::format("test_best{}", k)] = hex(m.test_acc_best);
    meta[fmt::format("test_last{}", k)] = hex(m.test_acc_last);
    meta[fmt::format("best_epoch{}", k)] = std::to_string(m.best_epoch);
  }
  save_safetensors(last_path(run, spec), all, meta);
}

Progress load_checkpoint(const std::string& path, const StageSpec& spec,
                         distill::Trainer& trainer) {
  const SafetensorsFile f = load_safetensors(path);
  auto field = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    MCD_CHECK(it != f.metadata.end(), "{}: checkpoint metadata lacks '{}'", path, key);
    return it->second;
  };
  MCD_CHECK(field("stage") == spec.name && field("method") == spec.method,
            "{}: checkpoint of stage '{}' ({}), expected '{}' ({})", path, field("stage"),
            field("method"), spec.name, spec.method);
  auto& students = trainer.students();
  MCD_CHECK(std::stoul(field("models")) == students.size(),
            "{}: checkpoint holds {} models, the configuration has {}", path, field("models"),
            students.size());
  Progress p;
  for (std::size_t k = 0; k < students.size(); ++k) {
    MCD_CHECK(field(fmt::format("arch{}", k)) == spec.archs[k],
              "{}: model {} is '{}' in the checkpoint but '{}' in the configuration", path, k,
              field(fmt::format("arch{}", k)), spec.archs[k]);
    StateDict model, optim;
    const std::string mp = fmt::format("model{}.", k), op = fmt::format("optim{}.", k);
    for (const auto& [key, t] : f.tensors) {
      if (key.rfind(mp, 0) == 0) model[key.substr(mp.size())] = t;
      if (key.rfind(op, 0) == 0) optim[key.substr(op.size())] = t;
    }
    students[k].model->load_state_dict(model, path);
    students[k].optimizer->load_state_dict(optim, path);
    auto meters = f.tensors.find(fmt::format("meters{}", k));
    MCD_CHECK(meters != f.tensors.end(), "{}: missing tensor 'meters{}'", path, k);
    students[k].meters = distill::Meters::from_vector(meters->second.to_doubles());
    ModelSummary m{spec.role, spec.archs[k]};
    m.best_val_acc = unhex(field(fmt::format("best_val{}", k)));
    m.test_acc_best = unhex(field(fmt::format("test_best{}", k)));
    m.test_acc_last = unhex(field(fmt::format("test_last{}", k)));
    m.best_epoch = std::stoll(field(fmt::format("best_epoch{}", k)));
    p.models.push_back(m);
  }
  StateDict policy;
  for (const auto& [key, t] : f.tensors)
    if (key.rfind("policy.", 0) == 0) policy[key.substr(7)] = t;
  trainer.policy().load_state_dict(policy, path);
  p.epoch = std::stoll(field("epoch"));
  p.batch = std::stoll(field("batch"));
  p.iteration = std::stoll(field("iteration"));
  p.seconds = unhex(field("seconds"));
  return p;
}

nlohmann::json result_json(const StageResult& r) {
  nlohmann::json j;
  j["seconds"] = r.seconds;
  j["seconds_per_epoch"] = r.seconds_per_epoch;
  j["peak_bytes"] = r.peak_bytes;
  j["device_peak_bytes"] = r.device_peak_bytes;
  j["device_peak_reserved_bytes"] = r.device_peak_reserved_bytes;
  j["models"] = nlohmann::json::array();
  for (std::size_t k = 0; k < r.models.size(); ++k) {
    const ModelSummary& m = r.models[k];
    j["models"].push_back({{"role", m.role},
                           {"arch", m.arch},
                           {"best_val_acc", m.best_val_acc},
                           {"test_acc_best", m.test_acc_best},
                           {"test_acc_last", m.test_acc_last},
                           {"epochs", m.epochs},
                           {"best_epoch", m.best_epoch},
                           {"best_checkpoint", r.best_checkpoints[k]}});
  }
  return j;
}

StageResult result_from_json(const nlohmann::json& j) {
  StageResult r;
  r.seconds = j.at("seconds").get<double>();
  r.seconds_per_epoch = j.at("seconds_per_epoch").get<double>();
  r.peak_bytes = j.at("peak_bytes").get<std::int64_t>();
  // Written since the device's peaks were added; absent from older runs' files.
  r.device_peak_bytes = j.value("device_peak_bytes", std::int64_t{0});
  r.device_peak_reserved_bytes = j.value("device_peak_reserved_bytes", std::int64_t{0});
  for (const auto& m : j.at("models")) {
    ModelSummary s{m.at("role").get<std::string>(), m.at("arch").get<std::string>()};
    s.best_val_acc = m.at("best_val_acc").get<double>();
    s.test_acc_best = m.at("test_acc_best").get<double>();
    s.test_acc_last = m.at("test_acc_last").get<double>();
    s.epochs = m.at("epochs").get<std::int64_t>();
    s.best_epoch = m.at("best_epoch").get<std::int64_t>();
    r.models.push_back(s);
    r.best_checkpoints.push_back(m.at("best_checkpoint").get<std::string>());
  }
  return r;
}

// One replica of every model of the stage, on one device (collective.h). The trainer holds a
// reference to `students`: a replica never moves.
struct Replica {
  Device device;
  std::vector<distill::Student> students;
  std::unique_ptr<distill::Trainer> trainer;
};

// Replica r's rows of `batch`: equal shares, the rows that do not divide among the replicas
// left out (a last batch's few), so that every replica sees the same shapes.
data::Batch share_of(const data::Batch& batch, int rank, int replicas) {
  const std::int64_t each = batch.labels.numel() / replicas;
  data::Batch b;
  b.images = batch.images.slice(0, rank * each, (rank + 1) * each);
  b.labels = batch.labels.slice(0, rank * each, (rank + 1) * each);
  return b;
}

// The largest of the devices' memory peaks (each replica's device holds a whole copy of the
// models, so the largest is what a run needs per GPU).
BlockCacheStats largest_device_peaks(const std::vector<Device>& devices) {
  BlockCacheStats most;
  for (const Device& device : devices) {
    if (device.is_cpu()) continue;
    const BlockCacheStats s = device_memory_stats(device);
    most.peak_allocated_bytes = std::max(most.peak_allocated_bytes, s.peak_allocated_bytes);
    most.peak_reserved_bytes = std::max(most.peak_reserved_bytes, s.peak_reserved_bytes);
  }
  return most;
}

// Adds every replica's meters into replica 0's (which the reports read) and clears the others.
void gather_meters(std::vector<std::unique_ptr<Replica>>& replicas) {
  for (std::size_t r = 1; r < replicas.size(); ++r)
    for (std::size_t k = 0; k < replicas[0]->students.size(); ++k) {
      std::vector<double> sum = replicas[0]->students[k].meters.to_vector();
      const std::vector<double> more = replicas[r]->students[k].meters.to_vector();
      for (std::size_t i = 0; i < sum.size(); ++i)
        sum[i] += more[i];
      replicas[0]->students[k].meters = distill::Meters::from_vector(sum);
      replicas[r]->students[k].meters.reset();
    }
}

}  // namespace

std::shared_ptr<nn::Module> load_trained_model(const ModelSource& source, const data::Dataset& d,
                                               Device device) {
  Generator gen(0);
  auto m = nn::make_model(source.arch, {d.channels, d.num_classes, d.height}, gen);
  m->load_state_dict(load_safetensors(source.checkpoint).tensors, source.checkpoint);
  m->to(device);
  m->eval();
  return m;
}

StageResult run_stage(const StageSpec& spec, const DataSplits& d,
                      const std::vector<ModelSource>& teachers, const PolicyFactory& make_policy,
                      double tau, const RunDirectory& run, bool resume,
                      const std::atomic<bool>& stop, std::int64_t stop_after_steps) {
  const std::string done_name = spec.name + "_done.json";
  if (resume && std::filesystem::exists(run.file(done_name))) {
    std::ifstream in(run.file(done_name));
    try {
      StageResult r = result_from_json(nlohmann::json::parse(in));
      fmt::print(stderr, "stage {}: already finished, reusing its results\n", spec.name);
      return r;
    } catch (const std::exception& e) {
      fail("{}: unreadable stage record: {}", run.file(done_name).string(), e.what());
    }
  }

  const data::Dataset& train = *d.train;
  const std::vector<Device> devices =
      d.replicas.empty() ? std::vector<Device>{d.device} : d.replicas;
  const int R = static_cast<int>(devices.size());
  MCD_CHECK(R == 1 || d.batch_size >= R,
            "stage {}: a batch of {} cannot be shared among {} replicas", spec.name, d.batch_size,
            R);
  std::vector<std::unique_ptr<Replica>> replicas;
  for (int rank = 0; rank < R; ++rank) {
    auto rep = std::make_unique<Replica>();
    rep->device = devices[static_cast<std::size_t>(rank)];
    // Every replica starts from the same weights: the same seeds, the same checkpoints.
    for (std::size_t k = 0; k < spec.archs.size(); ++k) {
      Generator gen(spec.seed * 1000003 + k);
      distill::Student s;
      s.name = spec.archs[k];
      s.model =
          nn::make_model(spec.archs[k], {train.channels, train.num_classes, train.height}, gen);
      if (k < spec.init_checkpoints.size() && !spec.init_checkpoints[k].empty()) {
        try {
          const SafetensorsFile f = load_safetensors(spec.init_checkpoints[k]);
          s.model->load_state_dict(f.tensors, spec.init_checkpoints[k]);
        } catch (const Error& e) {
          fail("stage {}: cannot initialise model {} ({}) from {}: {}", spec.name, k, spec.archs[k],
               spec.init_checkpoints[k], e.what());
        }
      }
      s.model->to(rep->device);  // before the optimizer holds any state
      optim::SgdOptions so;
      so.lr = spec.optim.lr;
      so.momentum = spec.optim.momentum;
      so.weight_decay = spec.optim.weight_decay;
      so.nesterov = spec.optim.nesterov;
      s.optimizer = std::make_unique<optim::Sgd>(s.model->parameters(), so);
      s.schedule = make_schedule(spec.optim, spec.epochs);
      rep->students.push_back(std::move(s));
    }
    std::vector<std::shared_ptr<nn::Module>> teacher_models;
    for (const ModelSource& t : teachers)
      teacher_models.push_back(load_trained_model(t, train, rep->device));
    rep->trainer = std::make_unique<distill::Trainer>(rep->students, std::move(teacher_models),
                                                      make_policy(rep->device), tau);
    distill::Trainer& trainer = *rep->trainer;
    trainer.set_concurrent_students(d.student_streams);
    trainer.set_shared_student_streams(d.shared_student_streams);
    trainer.set_graphs(d.graphs);
    // The host queues the next step before it reads a step's meters (the progress bar shows
    // them one step late); the epoch's report and the checkpoints flush them first.
    trainer.set_deferred_meters(true);
    if (R > 1) {
      trainer.set_collective(&d.collective(rank));
      // Each replica draws the same meta batch and keeps its share of it.
      if (auto* c = dynamic_cast<distill::CNetWeighting*>(&trainer.policy()))
        c->set_meta_share(rank, R);
    }
    replicas.push_back(std::move(rep));
  }
  // Replica 0's models and trainer are the stage's: evaluated, checkpointed, reported.
  std::vector<distill::Student>& students = replicas[0]->students;
  distill::Trainer& trainer = *replicas[0]->trainer;
  std::unique_ptr<ReplicaThreads> threads;
  if (R > 1) threads = std::make_unique<ReplicaThreads>(R);
  // Every replica's meters complete, then added into replica 0's.
  auto flush_meters = [&] {
    for (auto& rep : replicas)
      rep->trainer->flush_meters();
    gather_meters(replicas);
  };

  data::LoaderOptions lo;
  lo.batch_size = d.batch_size;
  lo.shuffle = true;
  lo.augmentation = d.augmentation;
  lo.normalization = d.normalization;
  lo.seed = spec.seed;
  data::PrefetchOptions prefetch;
  prefetch.num_threads = d.loader_threads;
  data::PrefetchLoader loader(train, d.split.train, lo, prefetch);

  Progress p;
  for (const auto& arch : spec.archs)
    p.models.push_back({spec.role, arch});
  if (resume && std::filesystem::exists(last_path(run, spec))) {
    for (auto& rep : replicas) {
      p = load_checkpoint(last_path(run, spec), spec, *rep->trainer);
      rep->trainer->set_iteration(p.iteration);
      // The checkpoint's meters are every replica's so far: replica 0 holds them.
      if (rep != replicas.front())
        for (auto& s : rep->students)
          s.meters.reset();
    }
    fmt::print(stderr, "stage {}: resuming at epoch {}, batch {}\n", spec.name, p.epoch + 1,
               p.batch);
  }

  std::vector<std::int64_t> test_indices(static_cast<std::size_t>(d.test->size()));
  for (std::size_t i = 0; i < test_indices.size(); ++i)
    test_indices[i] = static_cast<std::int64_t>(i);
  reset_peak_host_memory();
  for (const Device& device : devices)
    if (!device.is_cpu()) reset_peak_device_memory(device);
  std::int64_t steps_this_process = 0;
  std::string label = spec.name;
  for (; p.epoch < spec.epochs; ++p.epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& rep : replicas)
      for (auto& s : rep->students)
        s.optimizer->set_lr(s.schedule->lr_at(p.epoch));
    loader.restore(p.epoch, p.batch);
    ProgressBar bar(fmt::format("{} epoch {}/{}", label, p.epoch + 1, spec.epochs),
                    loader.batches_per_epoch(), d.batch_size, spec.progress);
    data::Batch batch;
    while (loader.next(batch)) {
      if (R == 1)
        trainer.step(batch);
      else if (batch.labels.numel() >= R)  // else too few images to share: left out
        try {
          threads->run([&](int rank) {
            replicas[static_cast<std::size_t>(rank)]->trainer->step(share_of(batch, rank, R));
          });
        } catch (const std::exception& e) {
          // A replica that failed aborted the collective from its step; failures outside it (a
          // device error that surfaced later) do it here, so that nothing waits on the group.
          for (int rank = 0; rank < R; ++rank)
            d.collective(rank).abort(e.what());
          throw;
        }
      p.batch = loader.position();
      p.iteration = trainer.iteration();
      ++steps_this_process;
      const auto& m = students.back().meters;
      bar.update(p.batch, fmt::format("loss {:.4f}", m.mean(m.loss)));
      if (stop.load() || (stop_after_steps > 0 && steps_this_process >= stop_after_steps)) {
        flush_meters();  // the clock then includes the last step's device time
        p.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        save_checkpoint(run, spec, trainer, p);
        fmt::print(stderr, "\ninterrupted: checkpoint written to {}; rerun with --resume\n",
                   last_path(run, spec));
        throw Interrupted{};
      }
    }
    flush_meters();  // waits for the last step, so the clock counts all of them
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p.seconds += train_seconds;
    std::string status;
    for (std::size_t k = 0; k < students.size(); ++k) {
      distill::Student& s = students[k];
      const auto val =
          distill::evaluate(*s.model, train, d.split.val, d.normalization, d.eval_batch_size);
      const auto test =
          distill::evaluate(*s.model, *d.test, test_indices, d.normalization, d.eval_batch_size);
      ModelSummary& ms = p.models[k];
      if (val.accuracy > ms.best_val_acc || ms.best_epoch == 0) {
        ms.best_val_acc = val.accuracy;
        ms.test_acc_best = test.accuracy;
        ms.best_epoch = p.epoch + 1;
        save_safetensors(best_path(run, spec, k), s.model->state_dict(),
                         {{"arch", spec.archs[k]},
                          {"stage", spec.name},
                          {"epoch", std::to_string(p.epoch + 1)},
                          {"val_acc", fmt::format("{}", val.accuracy)}});
      }
      ms.test_acc_last = test.accuracy;
      const distill::Meters& m = s.meters;
      nlohmann::json rec = {{"stage", spec.name},
                            {"method", spec.method},
                            {"role", spec.role},
                            {"arch", spec.archs[k]},
                            {"student", k},
                            {"epoch", p.epoch + 1},
                            {"lr", s.optimizer->lr()},
                            {"train_loss", m.mean(m.loss)},
                            {"train_ce", m.mean(m.ce)},
                            {"train_kl", m.mean(m.kl)},
                            {"train_acc", m.seen ? static_cast<double>(m.correct) / m.seen : 0.0},
                            {"alpha_mean", m.mean(m.alpha)},
                            {"alpha_std", m.spread(m.alpha, m.alpha_sq)},
                            {"beta_mean", m.mean(m.beta)},
                            {"beta_std", m.spread(m.beta, m.beta_sq)},
                            {"alpha_hist", m.alpha_hist},
                            {"beta_hist", m.beta_hist},
                            {"val_loss", val.mean_loss},
                            {"val_acc", val.accuracy},
                            {"test_acc", test.accuracy},
                            {"train_seconds", train_seconds},
                            {"images_per_second", static_cast<double>(m.seen) / train_seconds}};
      if (auto* c = dynamic_cast<distill::CNetWeighting*>(&trainer.policy())) {
        rec["meta_steps"] = c->meta_steps();
        rec["last_meta_loss"] = c->last_meta_loss();
      }
      // On a GPU: how many of this process's steps in the stage replayed a captured graph.
      if (!d.device.is_cpu()) {
        rec["graph_replayed_steps"] = trainer.replayed_steps();
        rec["graph_replayed_meta_steps"] = trainer.replayed_meta_steps();
        // High-water marks since the stage (or this process's part of it) began.
        const BlockCacheStats mem = largest_device_peaks(devices);
        rec["device_peak_bytes"] = mem.peak_allocated_bytes;
        rec["device_peak_reserved_bytes"] = mem.peak_reserved_bytes;
      }
      run.append_metrics(rec);
      status += fmt::format(" {} {:.4f}", spec.archs[k], test.accuracy);
      s.meters.reset();
    }
    bar.finish("test" + status);
    p.batch = 0;
    Progress next = p;
    ++next.epoch;
    save_checkpoint(run, spec, trainer, next);
  }

  if (spec.epochs == 0) {
    // Nothing to train (e.g. students loaded rather than warm-started): record the models as
    // they are, so later stages find their checkpoints in the usual place.
    for (std::size_t k = 0; k < students.size(); ++k) {
      nn::Module& model = *students[k].model;
      ModelSummary& ms = p.models[k];
      ms.best_val_acc =
          distill::evaluate(model, train, d.split.val, d.normalization, d.eval_batch_size).accuracy;
      ms.test_acc_best = ms.test_acc_last =
          distill::evaluate(model, *d.test, test_indices, d.normalization, d.eval_batch_size)
              .accuracy;
      save_safetensors(best_path(run, spec, k), model.state_dict(),
                       {{"arch", spec.archs[k]}, {"stage", spec.name}});
    }
  }
  StageResult r;
  r.models = p.models;
  for (auto& m : r.models)
    m.epochs = spec.epochs;
  for (std::size_t k = 0; k < spec.archs.size(); ++k)
    r.best_checkpoints.push_back(best_path(run, spec, k));
  r.seconds = p.seconds;
  r.seconds_per_epoch = spec.epochs > 0 ? p.seconds / static_cast<double>(spec.epochs) : 0.0;
  r.peak_bytes = host_memory_stats().peak_allocated_bytes;
  if (!d.device.is_cpu()) {
    const BlockCacheStats device = largest_device_peaks(devices);
    r.device_peak_bytes = device.peak_allocated_bytes;
    r.device_peak_reserved_bytes = device.peak_reserved_bytes;
  }
  run.write_json(done_name, result_json(r));
  return r;
}

}  // namespace mcd::app
