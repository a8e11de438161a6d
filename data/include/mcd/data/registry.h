// Data sets by name and path, and the summary printed by `--inspect`. The registry is one
// explicit table in registry.cpp; every reader returns the format-neutral TrainTest.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <mcd/data/dataset.h>
#include <mcd/data/image_decode.h>
#include <mcd/data/split.h>

namespace mcd::data {

// fashion-mnist, mnist, cifar10, cifar100, cifar100-coarse, tiny-imagenet, imagefolder.
const std::vector<std::string>& dataset_names();

// Reads data set `name` from `path` (a folder). `options` applies to the readers that decode
// image files (tiny-imagenet, imagefolder). An unknown name throws listing the known ones. An
// imagefolder without train/ and test/ returns an empty test set (see load_image_folder).
TrainTest load_dataset(const std::string& name, const std::string& path,
                       const ReadOptions& options = {});

// {"dataset", "train", "val", "test" (counts, train and val after `split`), "classes",
//  "shape": [C, H, W], "mean": [...], "std": [...] (per channel, of the training split, in
//  [0, 1] pixel units), "skipped": {"train", "test"} (undecodable files left out)}, plus
// "note" when the test set is empty. `split` indexes data.train.
nlohmann::json inspect(const TrainTest& data, const Split& split);

}  // namespace mcd::data
