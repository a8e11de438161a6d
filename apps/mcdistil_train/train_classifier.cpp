#include "train_classifier.h"

#include <fmt/format.h>

#include <mcd/data/loader.h>
#include <mcd/distill/classification.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/optim/lr_schedule.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/engine/safetensors.h>
#include <mcd/models/registry.h>

#include "progress.h"

namespace mcd::app {
namespace {

std::unique_ptr<optim::LrSchedule> make_schedule(const ClassifierConfig& c) {
  if (c.schedule == "cosine") return std::make_unique<optim::CosineAnnealing>(c.lr, c.epochs, 0.0);
  if (c.schedule == "step") return std::make_unique<optim::StepDecay>(c.lr, c.step_size, c.gamma);
  if (c.schedule == "constant") return std::make_unique<optim::Constant>(c.lr);
  fail("schedule: expected cosine, step or constant, got '{}'", c.schedule);
}

// Everything needed to continue exactly where a run stopped.
struct Position {
  std::int64_t epoch = 0;  // epoch in progress
  std::int64_t batch = 0;  // next batch within it
  double loss_sum = 0.0;   // running meters of the epoch in progress
  std::int64_t correct = 0, seen = 0;
  double best_val_acc = -1.0, test_acc_best = 0.0;
  std::int64_t best_epoch = 0;
};

StateDict prefixed(const StateDict& s, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : s)
    out[prefix + k] = v;
  return out;
}

StateDict unprefixed(const StateDict& s, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : s)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

void save_last(const RunDirectory& run, const std::string& name, nn::Module& model,
               const optim::Optimizer& opt, const ClassifierConfig& c, const Position& p) {
  StateDict all = prefixed(model.state_dict(), "model.");
  for (auto& [k, v] : prefixed(opt.state_dict(), "optim."))
    all[k] = v;
  const std::map<std::string, std::string> meta = {
      {"arch", c.arch},
      {"epoch", std::to_string(p.epoch)},
      {"batch", std::to_string(p.batch)},
      {"loss_sum", fmt::format("{:a}", p.loss_sum)},  // hex float: exact round trip
      {"correct", std::to_string(p.correct)},
      {"seen", std::to_string(p.seen)},
      {"best_val_acc", fmt::format("{:a}", p.best_val_acc)},
      {"test_acc_best", fmt::format("{:a}", p.test_acc_best)},
      {"best_epoch", std::to_string(p.best_epoch)}};
  save_safetensors(run.file(name).string(), all, meta);
}

Position load_last(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                   const ClassifierConfig& c) {
  const SafetensorsFile f = load_safetensors(path);
  auto field = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    MCD_CHECK(it != f.metadata.end(), "{}: checkpoint metadata lacks '{}'", path, key);
    return it->second;
  };
  MCD_CHECK(field("arch") == c.arch, "{}: checkpoint is for arch '{}', but --arch is '{}'", path,
            field("arch"), c.arch);
  model.load_state_dict(unprefixed(f.tensors, "model."), path);
  opt.load_state_dict(unprefixed(f.tensors, "optim."), path);
  Position p;
  p.epoch = std::stoll(field("epoch"));
  p.batch = std::stoll(field("batch"));
  p.loss_sum = std::strtod(field("loss_sum").c_str(), nullptr);
  p.correct = std::stoll(field("correct"));
  p.seen = std::stoll(field("seen"));
  p.best_val_acc = std::strtod(field("best_val_acc").c_str(), nullptr);
  p.test_acc_best = std::strtod(field("test_acc_best").c_str(), nullptr);
  p.best_epoch = std::stoll(field("best_epoch"));
  return p;
}

}  // namespace

ModelSummary train_classifier(const ClassifierConfig& c, const DataSplits& d,
                              const RunDirectory& run, bool resume, const std::atomic<bool>& stop) {
  const data::Dataset& train = *d.train;
  Generator init_gen(c.seed);
  auto model = nn::make_model(c.arch, {train.channels, train.num_classes, train.height}, init_gen);
  optim::SgdOptions so;
  so.lr = c.lr;
  so.momentum = c.momentum;
  so.weight_decay = c.weight_decay;
  so.nesterov = c.nesterov;
  optim::Sgd opt(model->parameters(), so);
  const auto schedule = make_schedule(c);

  data::LoaderOptions lo;
  lo.batch_size = c.batch_size;
  lo.shuffle = true;
  lo.augmentation.crop_padding = c.crop_padding;
  lo.augmentation.horizontal_flip = c.horizontal_flip;
  lo.normalization = d.normalization;
  lo.seed = c.seed;
  data::BatchIterator loader(train, d.split.train, lo);

  const std::string last_name = fmt::format("{}_last.safetensors", c.role);
  const std::string best_name = fmt::format("{}_best.safetensors", c.role);
  Position p;
  if (resume && std::filesystem::exists(run.file(last_name))) {
    p = load_last(run.file(last_name).string(), *model, opt, c);
    fmt::print(stderr, "resuming {} at epoch {}, batch {}\n", c.arch, p.epoch + 1, p.batch);
  }

  ModelSummary s{c.role, c.arch};
  std::vector<std::int64_t> test_indices(static_cast<std::size_t>(d.test->size()));
  for (std::size_t i = 0; i < test_indices.size(); ++i)
    test_indices[i] = static_cast<std::int64_t>(i);

  for (; p.epoch < c.epochs; ++p.epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    model->train();
    opt.set_lr(schedule->lr_at(p.epoch));
    loader.restore(p.epoch, p.batch);
    ProgressBar bar(fmt::format("{} epoch {}/{}", c.arch, p.epoch + 1, c.epochs),
                    loader.batches_per_epoch(), c.batch_size, c.progress);
    data::Batch batch;
    while (loader.next(batch)) {
      const distill::StepResult r = distill::train_step_ce(*model, opt, batch);
      p.loss_sum += r.loss * static_cast<double>(r.count);
      p.correct += r.correct;
      p.seen += r.count;
      p.batch = loader.position();
      bar.update(p.batch, fmt::format("loss {:.4f}", p.loss_sum / static_cast<double>(p.seen)));
      if (stop.load()) {
        save_last(run, last_name, *model, opt, c, p);
        fmt::print(stderr, "\ninterrupted: checkpoint written to {}; rerun with --resume\n",
                   run.file(last_name).string());
        throw Interrupted{};
      }
    }
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto val =
        distill::evaluate(*model, train, d.split.val, d.normalization, c.eval_batch_size);
    const auto test =
        distill::evaluate(*model, *d.test, test_indices, d.normalization, c.eval_batch_size);
    bar.finish(fmt::format("loss {:.4f} val {:.4f} test {:.4f}",
                           p.loss_sum / std::max<double>(1, p.seen), val.accuracy, test.accuracy));
    if (val.accuracy > p.best_val_acc) {
      p.best_val_acc = val.accuracy;
      p.test_acc_best = test.accuracy;
      p.best_epoch = p.epoch + 1;
      save_safetensors(run.file(best_name).string(), model->state_dict(),
                       {{"arch", c.arch},
                        {"epoch", std::to_string(p.epoch + 1)},
                        {"val_acc", fmt::format("{}", val.accuracy)}});
    }
    run.append_metrics({{"role", c.role},
                        {"arch", c.arch},
                        {"method", "ce"},
                        {"epoch", p.epoch + 1},
                        {"lr", opt.lr()},
                        {"train_loss", p.loss_sum / std::max<double>(1, p.seen)},
                        {"train_acc", static_cast<double>(p.correct) / std::max<double>(1, p.seen)},
                        {"val_loss", val.mean_loss},
                        {"val_acc", val.accuracy},
                        {"test_acc", test.accuracy},
                        {"train_seconds", train_seconds},
                        {"images_per_second", static_cast<double>(p.seen) / train_seconds}});
    s.test_acc_last = test.accuracy;
    p.batch = 0;
    p.loss_sum = 0;
    p.correct = p.seen = 0;
    Position next = p;
    ++next.epoch;
    save_last(run, last_name, *model, opt, c, next);
  }
  s.best_val_acc = p.best_val_acc;
  s.test_acc_best = p.test_acc_best;
  s.best_epoch = p.best_epoch;
  s.epochs = c.epochs;
  if (s.test_acc_last == 0.0 && c.epochs > 0) {
    // Resumed after the last epoch had finished: report the last checkpoint's test accuracy.
    s.test_acc_last =
        distill::evaluate(*model, *d.test, test_indices, d.normalization, c.eval_batch_size)
            .accuracy;
  }
  return s;
}

}  // namespace mcd::app
