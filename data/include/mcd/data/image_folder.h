// Reader for ImageFolder trees (the torchvision layout): root/<class>/**/*.{jpg,jpeg,png} in
// any letter case. Classes are the sorted folder names, files are sorted by their path inside
// the class folder (nested folders belong to their class), so labels and order are fixed.
#pragma once
#include <string>
#include <vector>

#include <mcd/data/dataset.h>
#include <mcd/data/image_decode.h>

namespace mcd::data {

// Reads one tree. `classes` (sorted folder names) fixes the label of each folder; empty means
// the folders of `dir` themselves. Every folder of `dir` must be one of `classes` and hold at
// least one image. Every image must have the size of the first one (the first file of the
// first class) and is converted to options.channels. Throws naming the file or folder.
Dataset read_image_folder(const std::string& dir, const ReadOptions& options,
                          const std::string& name, const std::vector<std::string>& classes = {});

// The class folders of `dir`, sorted.
std::vector<std::string> image_folder_classes(const std::string& dir);

// When root/train and root/test both exist they are the two sets, with the classes of train/
// (test/ may lack some classes but may not add any) and the same image size. Otherwise the
// classes are the folders of root (or of root/train when only that exists), and the test set
// is empty: the caller holds out part of train instead.
TrainTest load_image_folder(const std::string& root, const ReadOptions& options = {});

}  // namespace mcd::data
