// CIFAR binary reading: whole files are read at once and split into records; every label
// is range-checked before it is used, so a Dataset from here always passes check_dataset.
#include <mcd/data/cifar.h>

#include <cstring>
#include <filesystem>

#include <mcd/engine/error.h>

#include "file_bytes.h"

namespace mcd::data {
namespace {

constexpr std::size_t kImageBytes = 3 * 32 * 32;

// The folder holding `probe`: `dir` itself, or the subfolder the official archive extracts to.
std::filesystem::path cifar_dir(const std::string& dir, const std::string& subdir,
                                const std::string& probe, const char* op) {
  namespace fs = std::filesystem;
  MCD_CHECK(fs::is_directory(dir), "{}: directory '{}' does not exist", op, dir);
  const fs::path root(dir);
  if (!fs::exists(root / probe) && fs::exists(root / subdir / probe)) return root / subdir;
  return root;
}

}  // namespace

Dataset read_cifar(const std::vector<std::string>& paths, CifarFormat format,
                   const std::string& name) {
  constexpr const char* op = "read_cifar";
  const std::size_t label_bytes = format == CifarFormat::cifar10 ? 1 : 2;
  const std::size_t record = label_bytes + kImageBytes;
  Dataset d;
  d.name = name;
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.num_classes = format == CifarFormat::cifar10           ? 10
                  : format == CifarFormat::cifar100_coarse ? 20
                                                           : 100;
  MCD_CHECK(!paths.empty(), "{}: no files given for '{}'", op, name);
  for (const std::string& path : paths) {
    const std::vector<std::uint8_t> bytes = detail::read_file_bytes(path, op);
    MCD_CHECK(!bytes.empty() && bytes.size() % record == 0,
              "{}: file '{}' has {} bytes, expected a non-zero multiple of the record size {} "
              "({} label byte(s) + {} pixels): the file is truncated or not a {} file",
              op, path, bytes.size(), record, label_bytes, kImageBytes,
              format == CifarFormat::cifar10 ? "CIFAR-10" : "CIFAR-100");
    const std::size_t count = bytes.size() / record;
    const std::size_t offset = d.pixels.size();
    d.pixels.resize(offset + count * kImageBytes);
    d.labels.reserve(d.labels.size() + count);
    for (std::size_t r = 0; r < count; ++r) {
      const std::uint8_t* rec = bytes.data() + r * record;
      if (format == CifarFormat::cifar10) {
        MCD_CHECK(rec[0] < 10, "{}: file '{}' record {} has label {}, expected 0..9", op, path, r,
                  rec[0]);
        d.labels.push_back(rec[0]);
      } else {
        MCD_CHECK(rec[0] < 20, "{}: file '{}' record {} has coarse label {}, expected 0..19", op,
                  path, r, rec[0]);
        MCD_CHECK(rec[1] < 100, "{}: file '{}' record {} has fine label {}, expected 0..99", op,
                  path, r, rec[1]);
        d.labels.push_back(format == CifarFormat::cifar100_coarse ? rec[0] : rec[1]);
      }
      std::memcpy(d.pixels.data() + offset + r * kImageBytes, rec + label_bytes, kImageBytes);
    }
  }
  return d;
}

TrainTest load_cifar10(const std::string& dir) {
  const std::filesystem::path root =
      cifar_dir(dir, "cifar-10-batches-bin", "data_batch_1.bin", "load_cifar10");
  std::vector<std::string> train;
  for (int b = 1; b <= 5; ++b) {
    train.push_back((root / ("data_batch_" + std::to_string(b) + ".bin")).string());
  }
  TrainTest tt;
  tt.train = read_cifar(train, CifarFormat::cifar10, "cifar10/train");
  tt.test = read_cifar({(root / "test_batch.bin").string()}, CifarFormat::cifar10, "cifar10/test");
  return tt;
}

TrainTest load_cifar100(const std::string& dir, bool coarse_labels) {
  const std::filesystem::path root =
      cifar_dir(dir, "cifar-100-binary", "train.bin", "load_cifar100");
  const CifarFormat format =
      coarse_labels ? CifarFormat::cifar100_coarse : CifarFormat::cifar100_fine;
  const std::string prefix = coarse_labels ? "cifar100-coarse/" : "cifar100/";
  TrainTest tt;
  tt.train = read_cifar({(root / "train.bin").string()}, format, prefix + "train");
  tt.test = read_cifar({(root / "test.bin").string()}, format, prefix + "test");
  return tt;
}

}  // namespace mcd::data
