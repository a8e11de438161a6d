// One host thread per data-parallel replica, kept for the whole stage: a replica's trainer is
// always driven from the same thread (its current streams and page-locked staging buffers are
// the thread's own), and no thread is started per step.
#pragma once
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mcd::app {

class ReplicaThreads {
 public:
  explicit ReplicaThreads(int replicas);
  ~ReplicaThreads();
  ReplicaThreads(const ReplicaThreads&) = delete;
  ReplicaThreads& operator=(const ReplicaThreads&) = delete;

  // Runs work(r) on replica r's thread for every r and returns when all have ended; rethrows
  // the first failure (by replica order) after all have ended.
  void run(const std::function<void(int)>& work);

 private:
  void loop(int rank);
  void stop();  // ends and joins every thread

  std::mutex mutex_;
  std::condition_variable changed_;
  const std::function<void(int)>* work_ = nullptr;
  std::uint64_t round_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  std::vector<std::exception_ptr> errors_;
  std::vector<std::thread> threads_;
};

}  // namespace mcd::app
