// ImageFolder trees: folders and files are listed and sorted first, then decoded in parallel
// by decode_image_files; labels are positions in the sorted class list.
#include <mcd/data/image_folder.h>

#include <algorithm>
#include <filesystem>

#include <mcd/engine/error.h>

namespace mcd::data {
namespace {

namespace fs = std::filesystem;
constexpr const char* kOp = "load_image_folder";

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

}  // namespace

std::vector<std::string> image_folder_classes(const std::string& dir) {
  MCD_CHECK(fs::is_directory(dir), "{}: directory '{}' does not exist", kOp, dir);
  std::vector<std::string> classes;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    if (e.is_directory() && !hidden(e.path())) classes.push_back(e.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  MCD_CHECK(!classes.empty(), "{}: '{}' has no class folders", kOp, dir);
  return classes;
}

Dataset read_image_folder(const std::string& dir, const ReadOptions& options,
                          const std::string& name, const std::vector<std::string>& classes) {
  const std::vector<std::string> present = image_folder_classes(dir);
  const std::vector<std::string>& all = classes.empty() ? present : classes;
  std::vector<ImageFile> files;
  for (const std::string& cls : present) {
    const auto it = std::lower_bound(all.begin(), all.end(), cls);
    MCD_CHECK(it != all.end() && *it == cls,
              "{}: class folder '{}' is not one of the {} training classes", kOp,
              (fs::path(dir) / cls).string(), all.size());
    const auto label = static_cast<std::int64_t>(it - all.begin());
    const fs::path class_dir = fs::path(dir) / cls;
    std::vector<std::string> paths;
    for (auto walk = fs::recursive_directory_iterator(
             class_dir, fs::directory_options::follow_directory_symlink);
         walk != fs::recursive_directory_iterator(); ++walk) {
      if (hidden(walk->path())) {
        if (walk->is_directory()) walk.disable_recursion_pending();
        continue;
      }
      if (walk->is_regular_file() && has_image_extension(walk->path().filename().string())) {
        paths.push_back(walk->path().string());
      }
    }
    MCD_CHECK(!paths.empty(), "{}: class folder '{}' holds no .jpg/.jpeg/.png images", kOp,
              class_dir.string());
    std::sort(paths.begin(), paths.end());
    for (std::string& p : paths)
      files.push_back({std::move(p), label});
  }
  return decode_image_files(files, 0, 0, static_cast<std::int64_t>(all.size()), options, name);
}

TrainTest load_image_folder(const std::string& root, const ReadOptions& options) {
  MCD_CHECK(fs::is_directory(root), "{}: directory '{}' does not exist", kOp, root);
  const fs::path train_dir = fs::path(root) / "train";
  const fs::path test_dir = fs::path(root) / "test";
  TrainTest tt;
  if (fs::is_directory(train_dir) && fs::is_directory(test_dir)) {
    const std::vector<std::string> classes = image_folder_classes(train_dir.string());
    tt.train = read_image_folder(train_dir.string(), options, "imagefolder/train", classes);
    tt.test = read_image_folder(test_dir.string(), options, "imagefolder/test", classes);
    MCD_CHECK(tt.train.height == tt.test.height && tt.train.width == tt.test.width,
              "{}: '{}' has train images of {}x{} but test images of {}x{}", kOp, root,
              tt.train.height, tt.train.width, tt.test.height, tt.test.width);
    return tt;
  }
  const std::string dir = fs::is_directory(train_dir) ? train_dir.string() : root;
  tt.train = read_image_folder(dir, options, "imagefolder/train");
  tt.test.name = "imagefolder/test";
  tt.test.channels = tt.train.channels;
  tt.test.height = tt.train.height;
  tt.test.width = tt.train.width;
  tt.test.num_classes = tt.train.num_classes;
  return tt;
}

}  // namespace mcd::data
