// Tiny ImageNet: the file lists are built and validated first, in sorted order, then all
// images are decoded in parallel by decode_image_files, so the result is deterministic.
#include <mcd/data/tiny_imagenet.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <mcd/engine/error.h>

namespace mcd::data {
namespace {

namespace fs = std::filesystem;
constexpr const char* kOp = "load_tiny_imagenet";
constexpr std::int64_t kSize = 64;

std::string trim(const std::string& s) {
  const std::size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const std::size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> read_lines(const fs::path& path) {
  MCD_CHECK(fs::is_regular_file(path), "{}: file '{}' does not exist", kOp, path.string());
  std::ifstream f(path);
  MCD_CHECK(f.good(), "{}: cannot open '{}'", kOp, path.string());
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);)
    lines.push_back(line);
  MCD_CHECK(!f.bad(), "{}: error while reading '{}'", kOp, path.string());
  return lines;
}

// Sorted names of the image files directly in `dir`; other files (bounding-box lists, hidden
// files) are ignored.
std::vector<std::string> image_names(const fs::path& dir) {
  MCD_CHECK(fs::is_directory(dir), "{}: folder '{}' does not exist", kOp, dir.string());
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name[0] != '.' && has_image_extension(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TrainTest load_tiny_imagenet(const std::string& root_dir, const ReadOptions& options) {
  MCD_CHECK(fs::is_directory(root_dir), "{}: directory '{}' does not exist", kOp, root_dir);
  const fs::path root(root_dir);

  const fs::path wnids_path = root / "wnids.txt";
  std::vector<std::string> wnids;
  for (const std::string& line : read_lines(wnids_path)) {
    const std::string w = trim(line);
    MCD_CHECK(w.find('/') == std::string::npos && w != "." && w != "..",
              "{}: '{}' lists wnid '{}', which is not a plain folder name", kOp,
              wnids_path.string(), w);
    if (!w.empty()) wnids.push_back(w);
  }
  MCD_CHECK(!wnids.empty(), "{}: '{}' lists no wnids", kOp, wnids_path.string());
  std::sort(wnids.begin(), wnids.end());
  const auto dup = std::adjacent_find(wnids.begin(), wnids.end());
  MCD_CHECK(dup == wnids.end(), "{}: '{}' lists wnid '{}' twice", kOp, wnids_path.string(), *dup);
  std::map<std::string, std::int64_t> label_of;
  for (std::size_t i = 0; i < wnids.size(); ++i) {
    label_of[wnids[i]] = static_cast<std::int64_t>(i);
  }
  const auto num_classes = static_cast<std::int64_t>(wnids.size());

  const fs::path train_dir = root / "train";
  MCD_CHECK(fs::is_directory(train_dir), "{}: folder '{}' does not exist", kOp, train_dir.string());
  for (const fs::directory_entry& e : fs::directory_iterator(train_dir)) {
    const std::string name = e.path().filename().string();
    MCD_CHECK(!e.is_directory() || name[0] == '.' || label_of.count(name) != 0,
              "{}: train folder '{}' is not listed in '{}'", kOp, e.path().string(),
              wnids_path.string());
  }
  std::vector<ImageFile> train_files;
  for (const std::string& wnid : wnids) {
    const fs::path images = train_dir / wnid / "images";
    const std::vector<std::string> names = image_names(images);
    MCD_CHECK(!names.empty(), "{}: class folder '{}' holds no images", kOp, images.string());
    for (const std::string& n : names) {
      train_files.push_back({(images / n).string(), label_of.at(wnid)});
    }
  }

  const fs::path val_images = root / "val" / "images";
  const fs::path annotations_path = root / "val" / "val_annotations.txt";
  std::map<std::string, std::int64_t> val_label;
  const std::vector<std::string> lines = read_lines(annotations_path);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (trim(lines[i]).empty()) continue;
    std::vector<std::string> fields;
    std::stringstream ss(lines[i]);
    for (std::string f; std::getline(ss, f, '\t');)
      fields.push_back(trim(f));
    MCD_CHECK(fields.size() >= 2 && !fields[0].empty() && !fields[1].empty(),
              "{}: '{}' line {} is malformed: '{}', expected '<file>\\t<wnid>\\t<bbox...>'", kOp,
              annotations_path.string(), i + 1, lines[i]);
    const auto it = label_of.find(fields[1]);
    MCD_CHECK(it != label_of.end(), "{}: '{}' line {} names unknown wnid '{}' for '{}'", kOp,
              annotations_path.string(), i + 1, fields[1], fields[0]);
    MCD_CHECK(val_label.emplace(fields[0], it->second).second,
              "{}: '{}' line {} annotates '{}' a second time", kOp, annotations_path.string(),
              i + 1, fields[0]);
  }
  const std::vector<std::string> val_names = image_names(val_images);
  MCD_CHECK(!val_names.empty(), "{}: folder '{}' holds no images", kOp, val_images.string());
  std::vector<ImageFile> test_files;
  for (const std::string& n : val_names) {
    const auto it = val_label.find(n);
    MCD_CHECK(it != val_label.end(), "{}: image '{}' has no entry in '{}'", kOp,
              (val_images / n).string(), annotations_path.string());
    test_files.push_back({(val_images / n).string(), it->second});
  }
  if (val_names.size() != val_label.size()) {
    const std::set<std::string> present(val_names.begin(), val_names.end());
    for (const auto& [file, label] : val_label) {
      MCD_CHECK(present.count(file) != 0, "{}: '{}' annotates '{}', which is not in '{}'", kOp,
                annotations_path.string(), file, val_images.string());
    }
  }

  ReadOptions rgb = options;
  rgb.channels = 3;
  TrainTest tt;
  tt.train = decode_image_files(train_files, kSize, kSize, num_classes, rgb, "tiny-imagenet/train");
  tt.test = decode_image_files(test_files, kSize, kSize, num_classes, rgb, "tiny-imagenet/test");
  return tt;
}

}  // namespace mcd::data
