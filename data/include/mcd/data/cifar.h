// Readers for the official binary CIFAR-10 and CIFAR-100 files. A record is the label
// byte(s) then 3072 pixel bytes: 1024 red, 1024 green, 1024 blue, each plane 32x32 row-major,
// which is already the (C, H, W) layout of Dataset, so pixels are copied without reordering.
#pragma once
#include <string>
#include <vector>

#include <mcd/data/dataset.h>

namespace mcd::data {

enum class CifarFormat {
  cifar10,          // 1 label byte (0..9) per record
  cifar100_fine,    // coarse byte (0..19), fine byte (0..99); the fine label is used
  cifar100_coarse,  // same records; the coarse label is used
};

// Concatenates the records of `paths` in order. Throws naming the file when it is missing,
// empty, or its size is not a multiple of the record size, and naming the file, the record
// index and the value when a label (either label of a CIFAR-100 record) is out of range.
Dataset read_cifar(const std::vector<std::string>& paths, CifarFormat format,
                   const std::string& name);

// CIFAR-10: data_batch_1..5.bin (train), test_batch.bin (test). `dir` may also be the folder
// that holds the extracted cifar-10-batches-bin/.
TrainTest load_cifar10(const std::string& dir);

// CIFAR-100: train.bin, test.bin; fine labels (100 classes) or coarse labels (20 classes).
// `dir` may also be the folder that holds the extracted cifar-100-binary/.
TrainTest load_cifar100(const std::string& dir, bool coarse_labels = false);

}  // namespace mcd::data
