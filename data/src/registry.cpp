// The data set table: one entry per name, each a call to its reader. Names are matched
// exactly, so a misspelt name fails with the list instead of reading the wrong format.
#include <mcd/data/registry.h>

#include <functional>
#include <utility>

#include <mcd/data/cifar.h>
#include <mcd/data/idx.h>
#include <mcd/data/image_folder.h>
#include <mcd/data/tiny_imagenet.h>
#include <mcd/engine/error.h>

namespace mcd::data {
namespace {

using Reader = std::function<TrainTest(const std::string&, const ReadOptions&)>;

TrainTest renamed(TrainTest tt, const std::string& name) {
  tt.train.name = name + "/train";
  tt.test.name = name + "/test";
  return tt;
}

const std::vector<std::pair<std::string, Reader>>& table() {
  static const std::vector<std::pair<std::string, Reader>> readers = {
      {"fashion-mnist",
       [](const std::string& p, const ReadOptions&) { return load_fashion_mnist(p); }},
      {"mnist", [](const std::string& p,
                   const ReadOptions&) { return renamed(load_fashion_mnist(p), "mnist"); }},
      {"cifar10", [](const std::string& p, const ReadOptions&) { return load_cifar10(p); }},
      {"cifar100", [](const std::string& p, const ReadOptions&) { return load_cifar100(p); }},
      {"cifar100-coarse",
       [](const std::string& p, const ReadOptions&) { return load_cifar100(p, true); }},
      {"tiny-imagenet",
       [](const std::string& p, const ReadOptions& o) { return load_tiny_imagenet(p, o); }},
      {"imagefolder",
       [](const std::string& p, const ReadOptions& o) { return load_image_folder(p, o); }},
  };
  return readers;
}

}  // namespace

const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& entry : table())
      n.push_back(entry.first);
    return n;
  }();
  return names;
}

TrainTest load_dataset(const std::string& name, const std::string& path,
                       const ReadOptions& options) {
  for (const auto& [known, reader] : table()) {
    if (known == name) return reader(path, options);
  }
  std::string known;
  for (const std::string& n : dataset_names())
    known += (known.empty() ? "" : ", ") + n;
  fail("load_dataset: unknown data set '{}'; known: {}", name, known);
}

}  // namespace mcd::data
