// The run directory: metrics as JSON lines, checkpoints written atomically, summary.json.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mcd::app {

// One model's results as summary.json reports them (accuracies as fractions).
struct ModelSummary {
  std::string role;  // "teacher" | "student"
  std::string arch;
  double best_val_acc = 0.0;
  double test_acc_best = 0.0;  // test accuracy of the best-validation checkpoint
  double test_acc_last = 0.0;  // test accuracy after the last epoch
  std::int64_t epochs = 0;
  std::int64_t best_epoch = 0;
};

class RunDirectory {
 public:
  explicit RunDirectory(std::filesystem::path dir);  // creates it
  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path file(const std::string& name) const { return dir_ / name; }
  void append_metrics(const nlohmann::json& record) const;  // one line of metrics.jsonl
  // Writes JSON to `name` through a temporary file and a rename.
  void write_json(const std::string& name, const nlohmann::json& value) const;

 private:
  std::filesystem::path dir_;
};

nlohmann::json model_json(const ModelSummary& m);
nlohmann::json summary_json(const std::string& dataset, const std::string& method,
                            double wall_seconds, const std::vector<ModelSummary>& models);

}  // namespace mcd::app
