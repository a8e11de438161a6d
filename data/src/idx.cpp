// IDX reading. Header: two zero bytes, a type byte (0x08 = unsigned byte), a dimension count,
// then one big-endian uint32 per dimension; the data must fill the rest of the file exactly.
#include <mcd/data/idx.h>

#include <filesystem>

#include <mcd/engine/error.h>

#include "file_bytes.h"

namespace mcd::data {
namespace {

constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::uint32_t kLabelsMagic = 0x00000801;

std::uint32_t read_be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 |
         std::uint32_t{p[3]};
}

// Validates the header of an unsigned-byte IDX file with `ndims` dimensions, then drops it
// from `bytes` so that only the data remain. Returns the dims.
std::vector<std::int64_t> strip_idx_header(std::vector<std::uint8_t>& bytes, int ndims,
                                           const std::string& path, const char* what) {
  constexpr const char* op = "read_idx";
  const std::uint32_t expected_magic = 0x00000800u | static_cast<std::uint32_t>(ndims);
  MCD_CHECK(bytes.size() >= 4,
            "{}: {} file '{}' is too short for an IDX header: {} bytes, expected at least {}", op,
            what, path, bytes.size(), 4 + 4 * ndims);
  const std::uint32_t magic = read_be32(bytes.data());
  MCD_CHECK((magic & 0xffffff00u) == 0x00000800u,
            "{}: {} file '{}' has bad magic number 0x{:08x}, expected 0x{:08x} (IDX unsigned "
            "byte, {} dimensions)",
            op, what, path, magic, expected_magic, ndims);
  MCD_CHECK(magic == expected_magic,
            "{}: {} file '{}' has wrong dimension count {} (magic 0x{:08x}), expected {} "
            "(magic 0x{:08x})",
            op, what, path, magic & 0xffu, magic, ndims, expected_magic);
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(ndims);
  MCD_CHECK(bytes.size() >= header,
            "{}: {} file '{}' is too short for its IDX header: {} bytes, expected at least {}", op,
            what, path, bytes.size(), header);

  std::vector<std::int64_t> dims(static_cast<std::size_t>(ndims));
  std::uint64_t expected_bytes = 1;
  for (int d = 0; d < ndims; ++d) {
    dims[static_cast<std::size_t>(d)] = read_be32(bytes.data() + 4 + 4 * d);
    // Each dim < 2^32 and at most three of them: the product fits once it is checked here.
    MCD_CHECK(!__builtin_mul_overflow(expected_bytes, static_cast<std::uint64_t>(dims[d]),
                                      &expected_bytes),
              "{}: {} file '{}' has dims whose product overflows", op, what, path);
  }
  const std::size_t actual_bytes = bytes.size() - header;
  if (expected_bytes != actual_bytes) {
    std::string dims_str;
    for (std::size_t d = 0; d < dims.size(); ++d) {
      dims_str += (d ? " x " : "") + std::to_string(dims[d]);
    }
    fail("{}: {} file '{}' holds {} data bytes, expected {} ({}): the file is {}", op, what, path,
         actual_bytes, expected_bytes, dims_str,
         actual_bytes < expected_bytes ? "truncated" : "followed by trailing bytes");
  }
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  return dims;
}

std::string pick_file(const std::filesystem::path& dir, const std::string& gz_name) {
  const std::filesystem::path gz = dir / gz_name;
  if (std::filesystem::exists(gz)) return gz.string();
  const std::filesystem::path plain = dir / gz_name.substr(0, gz_name.size() - 3);
  if (std::filesystem::exists(plain)) return plain.string();
  fail("load_fashion_mnist: file '{}' does not exist (nor '{}')", gz.string(), plain.string());
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path,
                 std::int64_t num_classes, const std::string& name) {
  MCD_CHECK(num_classes > 0 && num_classes <= 256,
            "read_idx: num_classes = {} for '{}', expected 1..256 (labels are bytes)", num_classes,
            labels_path);
  std::vector<std::uint8_t> images = detail::read_maybe_gzip(images_path, "read_idx");
  const std::vector<std::int64_t> image_dims = strip_idx_header(images, 3, images_path, "images");
  std::vector<std::uint8_t> labels = detail::read_maybe_gzip(labels_path, "read_idx");
  const std::vector<std::int64_t> label_dims = strip_idx_header(labels, 1, labels_path, "labels");

  MCD_CHECK(image_dims[0] == label_dims[0],
            "read_idx: images file '{}' holds {} images but labels file '{}' holds {} labels",
            images_path, image_dims[0], labels_path, label_dims[0]);
  MCD_CHECK(image_dims[1] > 0 && image_dims[2] > 0,
            "read_idx: images file '{}' has empty images ({} x {})", images_path, image_dims[1],
            image_dims[2]);

  Dataset d;
  d.name = name;
  d.channels = 1;
  d.height = image_dims[1];
  d.width = image_dims[2];
  d.num_classes = num_classes;
  d.pixels = std::move(images);
  d.labels.resize(labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i) {
    MCD_CHECK(labels[i] < num_classes,
              "read_idx: labels file '{}' has label {} at index {}, expected < num_classes = {}",
              labels_path, labels[i], i, num_classes);
    d.labels[i] = labels[i];
  }
  return d;
}

TrainTest load_fashion_mnist(const std::string& dir) {
  namespace fs = std::filesystem;
  MCD_CHECK(fs::is_directory(dir), "load_fashion_mnist: directory '{}' does not exist", dir);
  const fs::path root(dir);
  TrainTest tt;
  tt.train = read_idx(pick_file(root, "train-images-idx3-ubyte.gz"),
                      pick_file(root, "train-labels-idx1-ubyte.gz"), 10, "fashion-mnist/train");
  tt.test = read_idx(pick_file(root, "t10k-images-idx3-ubyte.gz"),
                     pick_file(root, "t10k-labels-idx1-ubyte.gz"), 10, "fashion-mnist/test");
  MCD_CHECK(tt.train.height == tt.test.height && tt.train.width == tt.test.width,
            "load_fashion_mnist: '{}' has train images of {}x{} but test images of {}x{}", dir,
            tt.train.height, tt.train.width, tt.test.height, tt.test.width);
  return tt;
}

}  // namespace mcd::data
