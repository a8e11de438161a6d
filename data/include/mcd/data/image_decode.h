// Decoding of single JPEG and PNG files into 8-bit pixels, and the options shared by the
// image readers. The format is chosen by magic bytes, never by extension; a corrupt or
// truncated file throws mcd::Error naming the file and the decoder's message (no exit, no crash).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <mcd/data/dataset.h>

namespace mcd::data {

// Options of the readers that decode image files (Tiny ImageNet, ImageFolder).
struct ReadOptions {
  // When true, files that cannot be decoded are left out and counted in Dataset::skipped;
  // when false the first such file (in the reader's sorted order) throws. Images that decode
  // but have the wrong size always throw: that is a layout error, not a damaged file.
  bool skip_bad_images = false;
  // Channels every image is converted to (1 or 3): gray -> RGB replicates, RGBA -> RGB drops
  // alpha, RGB -> gray takes the BT.601 luminance. Tiny ImageNet is always read as 3.
  std::int64_t channels = 3;
};

struct DecodedImage {
  std::int64_t channels = 0, height = 0, width = 0;  // channels: 1 gray, 2 gray+alpha, 3, 4
  std::vector<std::uint8_t> pixels;                  // (H, W, C), interleaved as decoded
};

// JPEG (gray or colour; CMYK is rejected) or PNG (any colour type and bit depth; palettes and
// transparency are expanded, 16-bit samples scaled to 8 bits). `name` only labels errors.
DecodedImage decode_image_bytes(const std::uint8_t* data, std::size_t size,
                                const std::string& name);
DecodedImage decode_image(const std::string& path);

// Writes `img` to dst (channels, H, W) planar, converted as described in ReadOptions::channels.
void convert_to_planar(const DecodedImage& img, std::int64_t channels, std::uint8_t* dst);

struct ImageFile {
  std::string path;
  std::int64_t label = 0;
};

// Decodes `files` in parallel (OpenMP over files) into a Dataset whose sample i is files[i]
// (less any skipped files, order kept), so the result does not depend on the thread count.
// Every image must be height x width; 0 for both takes the size of the first decodable file.
// A mismatch throws naming the file and both sizes. Errors are reported for the first
// failing file in `files` order.
Dataset decode_image_files(const std::vector<ImageFile>& files, std::int64_t height,
                           std::int64_t width, std::int64_t num_classes, const ReadOptions& options,
                           const std::string& name);

// True for names ending in .jpg, .jpeg or .png, in any letter case.
bool has_image_extension(const std::string& file_name);

}  // namespace mcd::data
