// Readers for the IDX format of MNIST and Fashion-MNIST: gzip-compressed or plain files,
// unsigned-byte data only. Every error names the file path and what was wrong with it.
#pragma once
#include <cstdint>
#include <string>

#include <mcd/data/dataset.h>

namespace mcd::data {

// images_path: magic 0x00000803, dims (N, rows, cols); labels_path: magic 0x00000801, dims (N).
// The result has channels = 1, height = rows, width = cols. Throws when a file is missing, a
// gzip stream is truncated or corrupt, a magic number or dimension count is wrong, the data
// length differs from the product of the dims, the counts differ, or a label >= num_classes.
Dataset read_idx(const std::string& images_path, const std::string& labels_path,
                 std::int64_t num_classes, const std::string& name);

// Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from `dir` (the uncompressed names
// without .gz are accepted when the .gz file is absent). Works for MNIST too.
TrainTest load_fashion_mnist(const std::string& dir);

}  // namespace mcd::data
