// A one-line progress bar with rate and ETA on stderr. On a terminal it redraws in place;
// otherwise (logs, CI) it prints a line at every 10% so output stays readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace mcd::app {

class ProgressBar {
 public:
  ProgressBar(std::string label, std::int64_t total, std::int64_t items_per_step, bool enabled);
  // Marks `done` steps finished; `status` is appended (e.g. the running loss).
  void update(std::int64_t done, const std::string& status);
  void finish(const std::string& status);

 private:
  void draw(std::int64_t done, const std::string& status, bool final_line);

  std::string label_;
  std::int64_t total_, items_per_step_;
  bool enabled_, tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace mcd::app
