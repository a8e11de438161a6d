// The `--inspect` summary: counts after the split and the training split's channel
// statistics, computed with the same channel_statistics the normalisation uses.
#include <mcd/data/registry.h>
#include <mcd/data/transforms.h>
#include <mcd/engine/error.h>

namespace mcd::data {

nlohmann::json inspect(const TrainTest& data, const Split& split) {
  check_dataset(data.train, "inspect");
  check_indices(data.train, split.train, "inspect");
  check_indices(data.train, split.val, "inspect");
  MCD_CHECK(!split.train.empty(), "inspect: the training split of '{}' is empty", data.train.name);
  const std::string& name = data.train.name;
  const std::size_t slash = name.rfind('/');
  const Normalization norm = channel_statistics(data.train, split.train);
  nlohmann::json j;
  j["dataset"] = slash == std::string::npos ? name : name.substr(0, slash);
  j["train"] = split.train.size();
  j["val"] = split.val.size();
  j["test"] = data.test.size();
  j["classes"] = data.train.num_classes;
  j["shape"] = {data.train.channels, data.train.height, data.train.width};
  j["mean"] = norm.mean;
  j["std"] = norm.std;
  j["skipped"] = {{"train", data.train.skipped}, {"test", data.test.skipped}};
  if (data.test.size() == 0) {
    j["note"] = "no test set (an imagefolder without train/ and test/): hold out part of train";
  }
  return j;
}

}  // namespace mcd::data
