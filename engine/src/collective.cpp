// Gradient averaging between replicas that are threads of one process (collective.h).
#include <mcd/engine/collective.h>

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <utility>

#include <mcd/engine/autograd.h>
#include <mcd/engine/error.h>

namespace mcd {
namespace {

// What a replica reduces: each tensor's dtype and shape (undefined: an empty entry), so that
// replicas that disagree fail with both sides named rather than averaging the wrong values.
std::string signature_of(const std::vector<Tensor>& tensors) {
  std::string s;
  for (const Tensor& t : tensors)
    s += t.defined() ? fmt::format("{}{} ", dtype_name(t.dtype()), shape_str(t.shape()))
                     : std::string("undefined ");
  return s;
}

}  // namespace

// One round at a time: every replica deposits its values, the last to arrive averages them, then
// every replica takes the mean; the next round starts when all have taken it.
struct ThreadCollectives::Shared {
  Shared(int n, std::chrono::milliseconds wait_limit)
      : replicas(n),
        timeout(wait_limit),
        values(static_cast<std::size_t>(n)),
        signatures(static_cast<std::size_t>(n)) {}
  const int replicas;
  const std::chrono::milliseconds timeout;  // zero: none
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::vector<double>> values;  // per replica, this round
  std::vector<std::string> signatures;
  std::vector<double> mean;
  int arrived = 0, taken = 0;
  bool distributing = false;  // the mean is ready and not yet taken by every replica
  std::string error;          // set by abort() or by replicas that disagree

  void check_error() const {
    if (!error.empty()) fail("ThreadCollectives: {}", error);
  }

  // Averages in rank order (the last replica to arrive holds the lock).
  void average() {
    for (int r = 1; r < replicas; ++r)
      if (signatures[static_cast<std::size_t>(r)] != signatures[0]) {
        error = fmt::format("replica {} reduces [{}] but replica 0 reduces [{}]", r,
                            signatures[static_cast<std::size_t>(r)], signatures[0]);
        return;
      }
    mean.assign(values[0].size(), 0.0);
    for (const std::vector<double>& v : values)
      for (std::size_t i = 0; i < v.size(); ++i)
        mean[i] += v[i];
    for (double& m : mean)
      m /= static_cast<double>(replicas);
  }

  // Waits until `ready` (or an error), at most the timeout.
  template <class Ready>
  void wait(std::unique_lock<std::mutex>& lock, int rank, Ready ready) {
    auto done = [&] { return ready() || !error.empty(); };
    if (timeout.count() == 0) {
      changed.wait(lock, done);
    } else if (!changed.wait_for(lock, timeout, done)) {
      error = fmt::format("replica {} waited {} ms for the others", rank, timeout.count());
      changed.notify_all();
    }
  }

  std::vector<double> reduce(int rank, std::vector<double> mine, std::string signature) {
    std::unique_lock<std::mutex> lock(mutex);
    wait(lock, rank, [&] { return !distributing; });
    check_error();
    values[static_cast<std::size_t>(rank)] = std::move(mine);
    signatures[static_cast<std::size_t>(rank)] = std::move(signature);
    if (++arrived == replicas) {
      average();
      distributing = true;
      changed.notify_all();
    } else {
      wait(lock, rank, [&] { return distributing; });
    }
    check_error();
    std::vector<double> out = mean;
    if (++taken == replicas) {
      arrived = taken = 0;
      distributing = false;
      changed.notify_all();
    }
    return out;
  }
};

class ThreadCollectives::Replica final : public Collective {
 public:
  Replica(Shared& shared, int rank) : shared_(shared), rank_(rank) {}
  int size() const override { return shared_.replicas; }
  int rank() const override { return rank_; }
  void abort(const std::string& why) override {
    std::lock_guard<std::mutex> lock(shared_.mutex);
    shared_.error = fmt::format("aborted by replica {}: {}", rank_, why);
    shared_.changed.notify_all();
  }

  void all_reduce_mean(const std::vector<Tensor>& tensors) override {
    std::vector<double> mine;
    for (const Tensor& t : tensors) {
      if (!t.defined()) continue;
      MCD_CHECK(is_floating(t.dtype()),
                "ThreadCollectives: only floating tensors are averaged, got {} of shape {}",
                dtype_name(t.dtype()), shape_str(t.shape()));
      const std::vector<double> v = t.to_doubles();
      mine.insert(mine.end(), v.begin(), v.end());
    }
    const std::vector<double> mean = shared_.reduce(rank_, std::move(mine), signature_of(tensors));
    NoGradGuard no_grad;
    std::size_t at = 0;
    for (const Tensor& t : tensors) {
      if (!t.defined()) continue;
      const auto n = static_cast<std::size_t>(t.numel());
      const std::vector<double> part(mean.begin() + static_cast<std::ptrdiff_t>(at),
                                     mean.begin() + static_cast<std::ptrdiff_t>(at + n));
      at += n;
      // Rounded once, from float64 to the tensor's dtype, then copied to its device.
      Tensor(t).copy_(Tensor::from_vector(part, t.shape()).to(t.dtype()).to(t.device()));
    }
  }

 private:
  Shared& shared_;
  int rank_;
};

ThreadCollectives::ThreadCollectives(int replicas, std::chrono::milliseconds timeout) {
  MCD_CHECK(replicas >= 1, "ThreadCollectives: need at least one replica, got {}", replicas);
  MCD_CHECK(timeout.count() >= 0, "ThreadCollectives: negative timeout");
  shared_ = std::make_unique<Shared>(replicas, timeout);
  for (int r = 0; r < replicas; ++r)
    replicas_.push_back(std::make_unique<Replica>(*shared_, r));
}

ThreadCollectives::~ThreadCollectives() = default;

int ThreadCollectives::size() const {
  return shared_->replicas;
}

Collective& ThreadCollectives::replica(int rank) {
  MCD_CHECK(rank >= 0 && rank < shared_->replicas, "ThreadCollectives: replica {} of {}", rank,
            shared_->replicas);
  return *replicas_[static_cast<std::size_t>(rank)];
}

void ThreadCollectives::abort(const std::string& why) {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  shared_->error = "aborted: " + why;
  shared_->changed.notify_all();
}

std::vector<Tensor> gradients_of(const std::vector<Tensor>& parameters) {
  std::vector<Tensor> grads;
  grads.reserve(parameters.size());
  for (const Tensor& p : parameters)
    grads.push_back(p.grad());
  return grads;
}

}  // namespace mcd
