// The replicas' threads (replica_threads.h): each waits for the next round's work.
#include "replica_threads.h"

#include <cstdint>

namespace mcd::app {

ReplicaThreads::ReplicaThreads(int replicas) : errors_(static_cast<std::size_t>(replicas)) {
  try {
    for (int r = 0; r < replicas; ++r)
      threads_.emplace_back([this, r] { loop(r); });
  } catch (...) {
    stop();  // the threads already started, before they are destroyed unjoined
    throw;
  }
}

ReplicaThreads::~ReplicaThreads() {
  stop();
}

void ReplicaThreads::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

void ReplicaThreads::run(const std::function<void(int)>& work) {
  std::unique_lock<std::mutex> lock(mutex_);
  work_ = &work;
  running_ = static_cast<int>(threads_.size());
  for (auto& e : errors_)
    e = nullptr;
  ++round_;
  changed_.notify_all();
  changed_.wait(lock, [&] { return running_ == 0; });
  work_ = nullptr;
  for (const auto& e : errors_)
    if (e) std::rethrow_exception(e);
}

void ReplicaThreads::loop(int rank) {
  std::uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* work = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || round_ != seen; });
      if (stopping_) return;
      seen = round_;
      work = work_;
    }
    std::exception_ptr error;
    try {
      (*work)(rank);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      errors_[static_cast<std::size_t>(rank)] = error;
      --running_;
    }
    changed_.notify_all();
  }
}

}  // namespace mcd::app
