// Cross-entropy training step and evaluation.
#include <mcd/distill/classification.h>

#include <algorithm>
#include <optional>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/engine/transfer.h>

namespace mcd::distill {
namespace {
// Predicted classes against labels, both on the host.
std::int64_t count_matches(const Tensor& predicted, const Tensor& labels) {
  const auto* p = predicted.data<std::int64_t>();
  const auto* y = labels.data<std::int64_t>();
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    correct += p[i] == y[i];
  return correct;
}

// Predictions are compared on the host (labels may live on the host or the device).
std::int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  return count_matches(argmax(logits, 1).to(Device::cpu()), labels.to(Device::cpu()));
}

// One evaluation batch's results on their way to the host.
struct PendingBatch {
  HostCopy loss_sum, predicted;
  Tensor labels;  // on the host
};

}  // namespace

EvalResult evaluate(nn::Module& model, const data::Dataset& data,
                    const std::vector<std::int64_t>& indices,
                    const data::Normalization& normalization, std::int64_t batch_size) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  // A batch's results are read after the next batch was built and queued, so on a device the
  // host assembles batch i + 1 while the device runs batch i.
  std::optional<PendingBatch> pending;
  auto add = [&](PendingBatch& b) {
    loss_sum += b.loss_sum.get().item();
    correct += count_matches(b.predicted.get(), b.labels);
  };
  const Device device = model_device(model);
  for (std::size_t start = 0; start < indices.size();
       start += static_cast<std::size_t>(batch_size)) {
    const std::size_t end = std::min(indices.size(), start + static_cast<std::size_t>(batch_size));
    const std::vector<std::int64_t> chunk(indices.begin() + static_cast<std::ptrdiff_t>(start),
                                          indices.begin() + static_cast<std::ptrdiff_t>(end));
    const data::Batch batch = data::make_batch(data, chunk, normalization);
    const Tensor labels = to_device_async(batch.labels, device);
    const Tensor logits = model(to_device_async(batch.images, device));
    PendingBatch next{HostCopy(sum(cross_entropy(logits, labels))), HostCopy(argmax(logits, 1)),
                      batch.labels};
    if (pending) add(*pending);
    pending = std::move(next);
    r.count += static_cast<std::int64_t>(chunk.size());
  }
  if (pending) add(*pending);
  model.train(was_training);
  if (r.count > 0) {
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.count);
    r.mean_loss = loss_sum / static_cast<double>(r.count);
  }
  return r;
}

StepResult train_step_ce(nn::Module& model, optim::Optimizer& optimizer, const data::Batch& batch) {
  optimizer.zero_grad();
  const Device device = model_device(model);
  const Tensor logits = model(batch.images.to(device));
  const Tensor loss = mean(cross_entropy(logits, batch.labels.to(device)));
  loss.backward();
  optimizer.step();
  StepResult r;
  r.loss = loss.item();
  r.correct = count_correct(logits.detach(), batch.labels);
  r.count = batch.labels.numel();
  return r;
}

}  // namespace mcd::distill
