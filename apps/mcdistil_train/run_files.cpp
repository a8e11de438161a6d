#include "run_files.h"

#include <fstream>

#include <mcd/engine/error.h>

namespace mcd::app {

RunDirectory::RunDirectory(std::filesystem::path dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  MCD_CHECK(!ec, "run directory {}: cannot create it: {}", dir_.string(), ec.message());
}

void RunDirectory::append_metrics(const nlohmann::json& record) const {
  std::ofstream out(file("metrics.jsonl"), std::ios::app);
  MCD_CHECK(out.good(), "{}: cannot open for appending", file("metrics.jsonl").string());
  out << record.dump() << '\n';
}

void RunDirectory::write_json(const std::string& name, const nlohmann::json& value) const {
  const auto target = file(name);
  const auto tmp = file(name + ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    MCD_CHECK(out.good(), "{}: cannot open for writing", tmp.string());
    out << value.dump(2) << '\n';
    MCD_CHECK(out.good(), "{}: write failed", tmp.string());
  }
  std::filesystem::rename(tmp, target);
}

nlohmann::json model_json(const ModelSummary& m) {
  return {{"role", m.role},
          {"arch", m.arch},
          {"best_val_acc", m.best_val_acc},
          {"test_acc_best", m.test_acc_best},
          {"test_acc_last", m.test_acc_last},
          {"epochs", m.epochs},
          {"best_epoch", m.best_epoch}};
}

nlohmann::json summary_json(const std::string& dataset, const std::string& method,
                            double wall_seconds, const std::vector<ModelSummary>& models) {
  nlohmann::json j;
  j["dataset"] = dataset;
  j["method"] = method;
  j["wall_seconds"] = wall_seconds;
  j["models"] = nlohmann::json::array();
  for (const auto& m : models)
    j["models"].push_back(model_json(m));
  return j;
}

}  // namespace mcd::app
