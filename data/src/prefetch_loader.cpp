// PrefetchLoader: workers claim batch indices in increasing order, never more than `capacity`
// ahead of the trainer, and file the results by index; the trainer takes them by index, so
// the order and contents do not depend on which worker finished first.
#include <mcd/data/prefetch_loader.h>

#include <utility>

#include <mcd/engine/error.h>

namespace mcd::data {

PrefetchLoader::PrefetchLoader(const Dataset& data, std::vector<std::int64_t> indices,
                               LoaderOptions options, PrefetchOptions prefetch)
    : iter_(data, std::move(indices), std::move(options)), prefetch_(prefetch) {
  MCD_CHECK(prefetch_.num_threads >= 0, "PrefetchLoader: num_threads = {}, expected >= 0",
            prefetch_.num_threads);
  MCD_CHECK(prefetch_.capacity >= 1, "PrefetchLoader: capacity = {}, expected >= 1",
            prefetch_.capacity);
}

PrefetchLoader::~PrefetchLoader() {
  join_workers();
}

bool PrefetchLoader::can_claim() const {
  return !failed_ && next_claim_ < iter_.batches_per_epoch() &&
         next_claim_ < position_ + prefetch_.capacity;
}

void PrefetchLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [this] { return shutting_down_ || can_claim(); });
    if (shutting_down_) return;
    const std::int64_t b = next_claim_++;
    lock.unlock();
    Slot slot;
    try {
      slot.batch = iter_.batch(b, /*parallel=*/false);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lock.lock();
    if (slot.error) failed_ = true;
    ready_.emplace(b, std::move(slot));
    ready_cv_.notify_all();
  }
}

void PrefetchLoader::start_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutting_down_ = false;
    failed_ = false;
    next_claim_ = position_;
    ready_.clear();
  }
  try {
    for (std::int64_t t = 0; t < prefetch_.num_threads; ++t)
      workers_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    join_workers();
    throw;
  }
}

void PrefetchLoader::join_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutting_down_ = true;
  }
  work_cv_.notify_all();
  // A worker inside a build finishes that batch first; builds never wait on the trainer.
  for (std::thread& w : workers_)
    w.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  ready_.clear();
  next_claim_ = position_;
  failed_ = false;
}

bool PrefetchLoader::next(Batch& out) {
  MCD_CHECK(!stopped_,
            "PrefetchLoader::next: the loader was stopped at epoch {} position {}; call "
            "start_epoch() or restore() to continue",
            epoch(), position_);
  if (error_) std::rethrow_exception(error_);
  if (position_ >= iter_.batches_per_epoch()) return false;
  if (prefetch_.num_threads == 0) {
    out = iter_.batch(position_, /*parallel=*/true);
    ++position_;
    return true;
  }
  if (workers_.empty()) start_workers();
  std::unique_lock<std::mutex> lock(mutex_);
  // Batch position_ is always claimed or claimable: claims go in order from position_, and a
  // failure stops only claims after the failing batch, which is then filed itself.
  ready_cv_.wait(lock, [this] { return ready_.count(position_) != 0; });
  auto it = ready_.find(position_);
  Slot slot = std::move(it->second);
  ready_.erase(it);
  if (slot.error) {
    lock.unlock();
    error_ = slot.error;
    join_workers();
    std::rethrow_exception(error_);
  }
  out = std::move(slot.batch);
  ++position_;
  lock.unlock();
  work_cv_.notify_all();  // the window moved: one more batch may be claimed
  return true;
}

void PrefetchLoader::stop() {
  join_workers();
  stopped_ = true;
}

void PrefetchLoader::start_epoch(std::int64_t epoch) {
  join_workers();  // workers read the epoch order that start_epoch replaces
  iter_.start_epoch(epoch);
  position_ = 0;
  stopped_ = false;
  error_ = nullptr;
}

void PrefetchLoader::restore(std::int64_t epoch, std::int64_t position) {
  join_workers();
  iter_.restore(epoch, position);
  position_ = position;
  stopped_ = false;
  error_ = nullptr;
}

}  // namespace mcd::data
