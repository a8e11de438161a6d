// PrefetchLoader: BatchIterator's batches, built ahead of the trainer by worker threads into a
// bounded queue and handed out in order. Every batch is a pure function of (seed, epoch, batch
// index), so the batches are identical for any thread count, and the checkpoint API
// (epoch, position, restore) is the same as BatchIterator's.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <mcd/data/loader.h>

namespace mcd::data {

struct PrefetchOptions {
  // Worker threads. 0 builds each batch synchronously in next(), with OpenMP inside the batch;
  // workers build one batch each on a single thread, so the two never oversubscribe the CPU.
  std::int64_t num_threads = 2;
  // Batches built or being built ahead of the trainer, at most (>= 1).
  std::int64_t capacity = 4;
};

// Holds a reference to `data`, which must outlive the loader and must not change while workers
// run. Workers start on the first next() after construction, start_epoch() or restore(), and
// are joined by stop(), start_epoch(), restore(), a worker failure and the destructor.
class PrefetchLoader {
 public:
  PrefetchLoader(const Dataset& data, std::vector<std::int64_t> indices, LoaderOptions options,
                 PrefetchOptions prefetch = {});
  ~PrefetchLoader();
  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  void start_epoch(std::int64_t epoch);
  // The next batch of the epoch in order; false at the end of the epoch. An exception thrown
  // while building a batch is rethrown here, when that batch's turn comes, after the workers
  // have been joined; it is rethrown again by later calls until start_epoch() or restore().
  bool next(Batch& out);
  // Joins the workers, discarding prefetched batches; next() then throws until start_epoch()
  // or restore(). epoch() and position() stay valid, so a checkpoint can still be written.
  void stop();

  std::int64_t batches_per_epoch() const { return iter_.batches_per_epoch(); }
  std::int64_t num_samples() const { return iter_.num_samples(); }
  std::int64_t num_threads() const { return prefetch_.num_threads; }
  // Checkpoint position, as BatchIterator: the epoch and the index of the next batch.
  std::int64_t epoch() const { return iter_.epoch(); }
  std::int64_t position() const { return position_; }
  void restore(std::int64_t epoch, std::int64_t position);

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  bool can_claim() const;  // caller holds mutex_
  void worker_loop();
  void start_workers();
  void join_workers();  // also drops prefetched batches and rewinds the claims to position_

  BatchIterator iter_;  // the epoch's order; only batch() is used, its own position is not
  PrefetchOptions prefetch_;
  std::int64_t position_ = 0;
  bool stopped_ = false;
  std::exception_ptr error_;  // a worker's failure, rethrown by next()

  // Shared with the workers, guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable work_cv_;   // workers wait for a batch to claim or for shutdown
  std::condition_variable ready_cv_;  // the trainer waits for batch position_
  std::int64_t next_claim_ = 0;       // the next batch index a worker will build
  bool failed_ = false;               // a build threw: nothing more is claimed
  bool shutting_down_ = false;
  std::map<std::int64_t, Slot> ready_;
  std::vector<std::thread> workers_;
};

}  // namespace mcd::data
