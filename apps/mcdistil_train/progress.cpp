#include "progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace mcd::app {
namespace {
std::string clock_str(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{:02}:{:02}", s / 60, s % 60);
}
}  // namespace

ProgressBar::ProgressBar(std::string label, std::int64_t total, std::int64_t items_per_step,
                         bool enabled)
    : label_(std::move(label)),
      total_(total),
      items_per_step_(items_per_step),
      enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void ProgressBar::update(std::int64_t done, const std::string& status) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(150) && done < total_) return;
    last_draw_ = now;
    draw(done, status, false);
  } else {
    const int decile = total_ > 0 ? static_cast<int>(10 * done / total_) : 10;
    if (decile == last_decile_ || decile == 10) return;
    last_decile_ = decile;
    draw(done, status, true);
  }
}

void ProgressBar::finish(const std::string& status) {
  if (enabled_) draw(total_, status, true);
}

void ProgressBar::draw(std::int64_t done, const std::string& status, bool final_line) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done * items_per_step_) / elapsed : 0.0;
  const double eta =
      done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : 0.0;
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
  const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
  const std::string line = fmt::format("{} [{}] {}/{} {:.0f} img/s {} {} {}", label_, bar, done,
                                       total_, rate, done >= total_ ? "took" : "ETA",
                                       clock_str(done >= total_ ? elapsed : eta), status);
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace mcd::app
