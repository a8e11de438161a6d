// CIFAR, Tiny ImageNet and ImageFolder readers, image decoding and the registry, on small
// files written here in the real formats (JPEGs with libjpeg, PNGs with libpng). PNG pixels
// must match exactly; JPEG pixels must match an independent libjpeg decode of the same file.
#include <png.h>
#include <cstdio>

#include <jpeglib.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <mcd/data/cifar.h>
#include <mcd/data/image_decode.h>
#include <mcd/data/image_folder.h>
#include <mcd/data/registry.h>
#include <mcd/data/tiny_imagenet.h>
#include "support/test_files.h"

namespace fs = std::filesystem;
using Catch::Contains;
using namespace mcd::data;

namespace {

using mcd::testing::TempDir;

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// An (H, W, C) image: smooth gradients plus a little noise, so JPEG keeps it recognisable.
std::vector<std::uint8_t> make_image(int h, int w, int c, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> px(static_cast<std::size_t>(h * w * c));
  const int phase = static_cast<int>(rng() % 97);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) {
        const int v = (x * 3 + y * 2 + k * 50 + phase) % 200 + static_cast<int>(rng() % 16);
        px[static_cast<std::size_t>((y * w + x) * c + k)] = static_cast<std::uint8_t>(v);
      }
  return px;
}

// ---- libjpeg and libpng writers and the reference JPEG decoder

void write_jpeg(const std::string& path, int h, int w, int c, const std::vector<std::uint8_t>& hwc,
                int quality = 95) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = static_cast<JDIMENSION>(w);
  cinfo.image_height = static_cast<JDIMENSION>(h);
  cinfo.input_components = c;
  cinfo.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<std::uint8_t*>(hwc.data()) +
                   static_cast<std::size_t>(cinfo.next_scanline) * static_cast<std::size_t>(w * c);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

// Independent decode with libjpeg's stdio source and default settings: (H, W, C).
DecodedImage reference_jpeg(const std::string& path) {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_decompress(&cinfo);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  jpeg_start_decompress(&cinfo);
  DecodedImage img;
  img.channels = cinfo.output_components;
  img.height = cinfo.output_height;
  img.width = cinfo.output_width;
  img.pixels.resize(static_cast<std::size_t>(img.channels * img.height * img.width));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.pixels.data() + static_cast<std::size_t>(cinfo.output_scanline) *
                                           static_cast<std::size_t>(img.width * img.channels);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  std::fclose(f);
  return img;
}

// `rows` holds the samples as stored (16-bit samples big-endian, palette indices, ...).
void write_png(const std::string& path, int h, int w, int color_type, int bit_depth,
               const std::vector<std::uint8_t>& rows, const std::vector<png_color>& palette = {},
               bool interlaced = false) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  REQUIRE((png != nullptr && info != nullptr));
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), bit_depth,
               color_type, interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  }
  png_write_info(png, info);
  const std::size_t stride = rows.size() / static_cast<std::size_t>(h);
  std::vector<png_bytep> ptrs;
  for (int y = 0; y < h; ++y) {
    ptrs.push_back(const_cast<png_bytep>(rows.data() + static_cast<std::size_t>(y) * stride));
  }
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

int png_color_type(int c) {
  return c == 1   ? PNG_COLOR_TYPE_GRAY
         : c == 2 ? PNG_COLOR_TYPE_GRAY_ALPHA
         : c == 3 ? PNG_COLOR_TYPE_RGB
                  : PNG_COLOR_TYPE_RGB_ALPHA;
}

void write_png8(const std::string& path, int h, int w, int c,
                const std::vector<std::uint8_t>& hwc) {
  write_png(path, h, w, png_color_type(c), 8, hwc);
}

// The test's own conversion of (H, W, C) to (target, H, W), written independently of the
// library's convert_to_planar.
std::vector<std::uint8_t> planar(const std::vector<std::uint8_t>& hwc, int h, int w, int c,
                                 int target) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(target * h * w));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const std::uint8_t* p = &hwc[static_cast<std::size_t>((y * w + x) * c)];
      const int r = p[0], g = c >= 3 ? p[1] : p[0], b = c >= 3 ? p[2] : p[0];
      for (int k = 0; k < target; ++k) {
        const int v = target == 1 ? (299 * r + 587 * g + 114 * b + 500) / 1000  // BT.601, half up
                                  : (k == 0   ? r
                                     : k == 1 ? g
                                              : b);
        out[static_cast<std::size_t>((k * h + y) * w + x)] = static_cast<std::uint8_t>(v);
      }
    }
  return out;
}

void check_image(const Dataset& d, std::int64_t i, const std::vector<std::uint8_t>& expected,
                 const std::string& what) {
  REQUIRE(static_cast<std::int64_t>(expected.size()) == d.image_numel());
  const std::uint8_t* got = d.image(i);
  for (std::size_t k = 0; k < expected.size(); ++k) {
    if (got[k] != expected[k]) {
      FAIL(what << " (sample " << i << ") differs at element " << k << ": " << int(got[k]) << " vs "
                << int(expected[k]));
    }
  }
}

// The expected (3, H, W) of a JPEG file: the reference decode, converted by the test.
std::vector<std::uint8_t> expected_jpeg(const std::string& path, int target = 3) {
  const DecodedImage ref = reference_jpeg(path);
  return planar(ref.pixels, static_cast<int>(ref.height), static_cast<int>(ref.width),
                static_cast<int>(ref.channels), target);
}

// ---- CIFAR writers

struct CifarRecords {
  std::vector<std::uint8_t> bytes, pixels;
  std::vector<std::int64_t> fine, coarse;
};

CifarRecords cifar_records(int n, bool hundred, unsigned seed) {
  std::mt19937 rng(seed);
  CifarRecords r;
  for (int i = 0; i < n; ++i) {
    const auto coarse = static_cast<std::uint8_t>(rng() % 20);
    const auto fine = static_cast<std::uint8_t>(rng() % (hundred ? 100 : 10));
    if (hundred) r.bytes.push_back(coarse);
    r.bytes.push_back(fine);
    r.fine.push_back(fine);
    r.coarse.push_back(coarse);
    for (int k = 0; k < 3072; ++k) {
      const auto v = static_cast<std::uint8_t>(rng());
      r.bytes.push_back(v);
      r.pixels.push_back(v);
    }
  }
  return r;
}

// ---- Tiny ImageNet writer: classes in unsorted wnids.txt order, one gray JPEG per class.

struct TinyImageNet {
  std::vector<std::string> wnids = {"n03", "n01", "n02"};  // sorted labels: n01=0, n02=1, n03=2
  std::vector<std::pair<std::string, std::int64_t>> train, val;  // paths and labels, sorted
  explicit TinyImageNet(const TempDir& dir) {
    std::string list;
    for (const auto& w : wnids)
      list += w + "\n";
    write_bytes(dir.file("wnids.txt"), {list.begin(), list.end()});
    unsigned seed = 1;
    for (const auto& w : wnids) {
      const std::int64_t label = w == "n01" ? 0 : w == "n02" ? 1 : 2;
      write_bytes(dir.file("train/" + w + "/" + w + "_boxes.txt"), {'x'});
      for (int i = 0; i < 3; ++i) {
        const int c = i == 1 ? 1 : 3;
        const std::string p =
            dir.file("train/" + w + "/images/" + w + "_" + std::to_string(i) + ".JPEG");
        write_jpeg(p, 64, 64, c, make_image(64, 64, c, seed++));
        train.emplace_back(p, label);
      }
    }
    std::string ann;
    for (int i = 0; i < 4; ++i) {
      const std::string name = "val_" + std::to_string(i) + ".JPEG";
      const std::string w = wnids[static_cast<std::size_t>(i % 3)];
      ann += name + "\t" + w + "\t0\t1\t60\t62\n";
      const std::string p = dir.file("val/images/" + name);
      write_jpeg(p, 64, 64, 3, make_image(64, 64, 3, 100 + static_cast<unsigned>(i)));
      val.emplace_back(p, w == "n01" ? 0 : w == "n02" ? 1 : 2);
    }
    write_bytes(dir.file("val/val_annotations.txt"), {ann.begin(), ann.end()});
  }
};

}  // namespace

TEST_CASE("decode_image reads every PNG colour type exactly", "[data][decode]") {
  TempDir dir;
  const int h = 7, w = 9;
  for (int c = 1; c <= 4; ++c) {
    const auto px = make_image(h, w, c, static_cast<unsigned>(c));
    const std::string path = dir.file(fmt::format("c{}.png", c));
    write_png8(path, h, w, c, px);
    const DecodedImage img = decode_image(path);
    CHECK(img.channels == c);
    CHECK(img.height == h);
    CHECK(img.width == w);
    CHECK(img.pixels == px);
  }
  SECTION("16-bit RGB is scaled to 8 bits") {
    const auto px = make_image(h, w, 3, 5);
    std::vector<std::uint8_t> rows;
    for (std::uint8_t v : px) {  // v * 257 scales back to exactly v
      rows.push_back(v);
      rows.push_back(v);
    }
    write_png(dir.file("16.png"), h, w, PNG_COLOR_TYPE_RGB, 16, rows);
    CHECK(decode_image(dir.file("16.png")).pixels == px);
  }
  SECTION("palette is expanded to RGB") {
    std::vector<png_color> pal = {{10, 20, 30}, {200, 100, 0}, {0, 255, 7}};
    std::vector<std::uint8_t> idx, expected;
    for (int k = 0; k < h * w; ++k) {
      idx.push_back(static_cast<std::uint8_t>(k % 3));
      const png_color& col = pal[static_cast<std::size_t>(k % 3)];
      expected.insert(expected.end(), {col.red, col.green, col.blue});
    }
    write_png(dir.file("pal.png"), h, w, PNG_COLOR_TYPE_PALETTE, 8, idx, pal);
    const DecodedImage img = decode_image(dir.file("pal.png"));
    CHECK(img.channels == 3);
    CHECK(img.pixels == expected);
  }
  SECTION("interlaced (Adam7)") {
    const auto px = make_image(h, w, 3, 9);
    write_png(dir.file("i.png"), h, w, PNG_COLOR_TYPE_RGB, 8, px, {}, true);
    CHECK(decode_image(dir.file("i.png")).pixels == px);
  }
}

TEST_CASE("decode_image reads JPEGs like libjpeg, by magic bytes", "[data][decode]") {
  TempDir dir;
  for (int c : {1, 3}) {
    const auto px = make_image(20, 24, c, 3);
    const std::string path = dir.file("img" + std::to_string(c) + ".png");  // wrong extension
    write_jpeg(path, 20, 24, c, px, 100);
    const DecodedImage img = decode_image(path);
    const DecodedImage ref = reference_jpeg(path);
    CHECK(img.channels == c);
    CHECK(img.height == 20);
    CHECK(img.width == 24);
    CHECK(img.pixels == ref.pixels);
    // Near the source image too, so rows and channels are where they belong (4:2:0 chroma
    // subsampling of the per-pixel noise costs about 7 levels; a swap or transpose ~50).
    double err = 0;
    for (std::size_t k = 0; k < px.size(); ++k)
      err += std::abs(int(img.pixels[k]) - int(px[k]));
    CHECK(err / static_cast<double>(px.size()) < 10.0);
  }
}

TEST_CASE("decode_image rejects damaged files with the file name", "[data][decode]") {
  TempDir dir;
  const std::string jpg = dir.file("good.jpg"), png = dir.file("good.png");
  write_jpeg(jpg, 32, 32, 3, make_image(32, 32, 3, 1));
  write_png8(png, 32, 32, 3, make_image(32, 32, 3, 2));
  const auto jbytes = read_bytes(jpg), pbytes = read_bytes(png);
  std::mt19937 rng(5);
  std::vector<std::uint8_t> noise(500);
  for (auto& b : noise)
    b = static_cast<std::uint8_t>(rng());

  const std::string p = dir.file("bad.JPEG");
  SECTION("random bytes") {
    noise[0] = 0;
    write_bytes(p, noise);
    REQUIRE_THROWS_WITH(decode_image(p), Contains(p) && Contains("neither a JPEG nor a PNG"));
  }
  SECTION("random bytes after the JPEG magic") {
    noise[0] = 0xff, noise[1] = 0xd8, noise[2] = 0xff;
    write_bytes(p, noise);
    REQUIRE_THROWS_WITH(decode_image(p), Contains(p) && Contains("corrupt JPEG"));
  }
  SECTION("truncated JPEG") {
    for (std::size_t cut : {jbytes.size() / 2, jbytes.size() - 2, std::size_t{10}}) {
      INFO("kept " << cut << " bytes");
      write_bytes(p, {jbytes.begin(), jbytes.begin() + static_cast<long>(cut)});
      REQUIRE_THROWS_WITH(decode_image(p), Contains(p) && Contains("corrupt JPEG"));
    }
  }
  SECTION("truncated and corrupt PNG") {
    write_bytes(p, {pbytes.begin(), pbytes.begin() + static_cast<long>(pbytes.size() / 2)});
    REQUIRE_THROWS_WITH(decode_image(p), Contains(p) && Contains("corrupt PNG"));
    auto flipped = pbytes;
    flipped[20] ^= 0x55;  // inside IHDR: its CRC no longer matches
    write_bytes(p, flipped);
    REQUIRE_THROWS_WITH(decode_image(p), Contains(p) && Contains("corrupt PNG"));
  }
  SECTION("empty and missing files") {
    write_bytes(p, {});
    REQUIRE_THROWS_WITH(decode_image(p), Contains(p) && Contains("empty"));
    REQUIRE_THROWS_WITH(decode_image(dir.file("none.png")), Contains("does not exist"));
  }
}

TEST_CASE("convert_to_planar: gray to RGB, RGBA to RGB, RGB to gray", "[data][decode]") {
  const int h = 5, w = 6;
  for (int c = 1; c <= 4; ++c) {
    for (int target : {1, 3}) {
      DecodedImage img;
      img.channels = c, img.height = h, img.width = w;
      img.pixels = make_image(h, w, c, static_cast<unsigned>(10 * c + target));
      std::vector<std::uint8_t> out(static_cast<std::size_t>(target * h * w));
      convert_to_planar(img, target, out.data());
      INFO("from " << c << " to " << target << " channels");
      CHECK(out == planar(img.pixels, h, w, c, target));
    }
  }
}

TEST_CASE("CIFAR-10 and CIFAR-100 binary files are read record by record", "[data][cifar]") {
  TempDir dir;
  SECTION("CIFAR-10, also from the archive's folder") {
    CifarRecords train, test = cifar_records(4, false, 99);
    for (int b = 1; b <= 5; ++b) {
      const CifarRecords r = cifar_records(b, false, static_cast<unsigned>(b));
      write_bytes(dir.file(fmt::format("cifar-10-batches-bin/data_batch_{}.bin", b)), r.bytes);
      train.pixels.insert(train.pixels.end(), r.pixels.begin(), r.pixels.end());
      train.fine.insert(train.fine.end(), r.fine.begin(), r.fine.end());
    }
    write_bytes(dir.file("cifar-10-batches-bin/test_batch.bin"), test.bytes);
    for (const std::string& root :
         {dir.path.string(), (dir.path / "cifar-10-batches-bin").string()}) {
      const TrainTest tt = load_cifar10(root);
      CHECK(tt.train.size() == 15);
      CHECK(tt.train.num_classes == 10);
      CHECK((tt.train.channels == 3 && tt.train.height == 32 && tt.train.width == 32));
      CHECK(tt.train.pixels == train.pixels);
      CHECK(tt.train.labels == train.fine);
      CHECK(tt.test.pixels == test.pixels);
      CHECK(tt.test.labels == test.fine);
      CHECK(tt.train.name == "cifar10/train");
    }
  }
  SECTION("CIFAR-100 fine and coarse") {
    const CifarRecords train = cifar_records(6, true, 1), test = cifar_records(3, true, 2);
    write_bytes(dir.file("train.bin"), train.bytes);
    write_bytes(dir.file("test.bin"), test.bytes);
    const TrainTest fine = load_cifar100(dir.path.string());
    CHECK(fine.train.num_classes == 100);
    CHECK(fine.train.labels == train.fine);
    CHECK(fine.test.labels == test.fine);
    CHECK(fine.train.pixels == train.pixels);
    CHECK(fine.test.pixels == test.pixels);
    const TrainTest coarse = load_dataset("cifar100-coarse", dir.path.string());
    CHECK(coarse.train.num_classes == 20);
    CHECK(coarse.train.labels == train.coarse);
    CHECK(coarse.test.labels == test.coarse);
    CHECK(coarse.train.pixels == train.pixels);
  }
}

TEST_CASE("CIFAR errors name the file, sizes, records and labels", "[data][cifar]") {
  TempDir dir;
  const CifarRecords r = cifar_records(3, true, 7);
  const std::string f = dir.file("train.bin");
  SECTION("truncated file") {
    write_bytes(f, {r.bytes.begin(), r.bytes.end() - 100});
    REQUIRE_THROWS_WITH(read_cifar({f}, CifarFormat::cifar100_fine, "x"),
                        Contains(f) && Contains(std::to_string(r.bytes.size() - 100)) &&
                            Contains("record size 3074"));
    REQUIRE_THROWS_WITH(read_cifar({f}, CifarFormat::cifar10, "x"), Contains("record size 3073"));
  }
  SECTION("labels out of range") {
    auto bytes = r.bytes;
    bytes[2 * 3074 + 1] = 100;  // fine label of record 2
    write_bytes(f, bytes);
    REQUIRE_THROWS_WITH(read_cifar({f}, CifarFormat::cifar100_coarse, "x"),
                        Contains(f) && Contains("record 2") && Contains("fine label 100"));
    bytes = r.bytes;
    bytes[3074] = 20;  // coarse label of record 1
    write_bytes(f, bytes);
    REQUIRE_THROWS_WITH(read_cifar({f}, CifarFormat::cifar100_fine, "x"),
                        Contains("record 1") && Contains("coarse label 20"));
    const CifarRecords ten = cifar_records(2, false, 8);
    bytes = ten.bytes;
    bytes[3073] = 10;
    write_bytes(f, bytes);
    REQUIRE_THROWS_WITH(read_cifar({f}, CifarFormat::cifar10, "x"),
                        Contains(f) && Contains("record 1") && Contains("label 10"));
  }
  SECTION("missing and empty files") {
    REQUIRE_THROWS_WITH(load_cifar10(dir.path.string()),
                        Contains("data_batch_1.bin") && Contains("does not exist"));
    write_bytes(f, {});
    REQUIRE_THROWS_WITH(read_cifar({f}, CifarFormat::cifar100_fine, "x"),
                        Contains(f) && Contains("has 0 bytes"));
  }
}

TEST_CASE("Tiny ImageNet: sorted wnids, gray JPEGs as RGB, val as the test set",
          "[data][tiny_imagenet]") {
  TempDir dir;
  const TinyImageNet t(dir);
  const TrainTest tt = load_dataset("tiny-imagenet", dir.path.string());
  REQUIRE(tt.train.size() == 9);
  REQUIRE(tt.test.size() == 4);
  CHECK((tt.train.channels == 3 && tt.train.height == 64 && tt.train.width == 64));
  CHECK(tt.train.num_classes == 3);
  CHECK(tt.test.num_classes == 3);
  // The fixture lists train files in wnids.txt order; the reader sorts by wnid.
  std::vector<std::pair<std::string, std::int64_t>> train = t.train;
  std::sort(train.begin(), train.end());
  for (std::size_t i = 0; i < train.size(); ++i) {
    CHECK(tt.train.labels[i] == train[i].second);
    check_image(tt.train, static_cast<std::int64_t>(i), expected_jpeg(train[i].first),
                train[i].first);
  }
  for (std::size_t i = 0; i < t.val.size(); ++i) {
    CHECK(tt.test.labels[i] == t.val[i].second);
    check_image(tt.test, static_cast<std::int64_t>(i), expected_jpeg(t.val[i].first),
                t.val[i].first);
  }
  CHECK(tt.train.skipped == 0);
}

TEST_CASE("Tiny ImageNet errors name the file or entry", "[data][tiny_imagenet]") {
  TempDir dir;
  const TinyImageNet t(dir);
  const std::string root = dir.path.string();
  const std::string ann_path = dir.file("val/val_annotations.txt");
  const auto ann = read_bytes(ann_path);
  std::string text(ann.begin(), ann.end());
  SECTION("image without annotation") {
    write_jpeg(dir.file("val/images/extra.JPEG"), 64, 64, 3, make_image(64, 64, 3, 1));
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root),
                        Contains("extra.JPEG") && Contains("has no entry"));
  }
  SECTION("unknown wnid") {
    text += "val_9.JPEG\tn99\t0\t0\t1\t1\n";
    write_bytes(ann_path, {text.begin(), text.end()});
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root),
                        Contains("unknown wnid 'n99'") && Contains("line 5") && Contains(ann_path));
  }
  SECTION("annotation of a missing file") {
    text += "val_9.JPEG\tn01\t0\t0\t1\t1\n";
    write_bytes(ann_path, {text.begin(), text.end()});
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root), Contains("val_9.JPEG") && Contains("not in"));
  }
  SECTION("empty class folder") {
    for (const auto& e : fs::directory_iterator(dir.path / "train/n02/images"))
      fs::remove(e);
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root),
                        Contains("n02") && Contains("images") && Contains("holds no images"));
  }
  SECTION("class folder not in wnids.txt") {
    fs::create_directories(dir.path / "train/n77/images");
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root), Contains("n77") && Contains("not listed"));
  }
  SECTION("wrong image size") {
    const std::string p = t.train[4].first;
    write_jpeg(p, 32, 64, 3, make_image(32, 64, 3, 1));
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root),
                        Contains(p) && Contains("is 32x64") && Contains("expected 64x64"));
  }
  SECTION("undecodable images throw, or are skipped and counted") {
    const std::string junk = t.train[2].first, cut = t.val[1].first;
    write_bytes(junk, {1, 2, 3, 4, 5, 6, 7, 8});
    const auto bytes = read_bytes(cut);
    write_bytes(cut, {bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2)});
    REQUIRE_THROWS_WITH(load_tiny_imagenet(root), Contains(junk));
    ReadOptions skip;
    skip.skip_bad_images = true;
    const TrainTest tt = load_tiny_imagenet(root, skip);
    CHECK(tt.train.skipped == 1);
    CHECK(tt.test.skipped == 1);
    REQUIRE(tt.train.size() == 8);
    REQUIRE(tt.test.size() == 3);
    std::vector<std::pair<std::string, std::int64_t>> train = t.train, val = t.val;
    std::sort(train.begin(), train.end());
    std::erase_if(train, [&](const auto& e) { return e.first == junk; });
    std::erase_if(val, [&](const auto& e) { return e.first == cut; });
    for (std::size_t i = 0; i < train.size(); ++i) {
      CHECK(tt.train.labels[i] == train[i].second);
      check_image(tt.train, static_cast<std::int64_t>(i), expected_jpeg(train[i].first),
                  train[i].first);
    }
    for (std::size_t i = 0; i < val.size(); ++i) {
      CHECK(tt.test.labels[i] == val[i].second);
      check_image(tt.test, static_cast<std::int64_t>(i), expected_jpeg(val[i].first), val[i].first);
    }
  }
}

TEST_CASE("ImageFolder: nested classes, JPEG and PNG, channel conversion", "[data][image_folder]") {
  TempDir dir;
  const int h = 12, w = 10;
  // (path, label, expected (3, H, W), expected (1, H, W)) in the reader's order.
  struct Entry {
    std::string path;
    std::int64_t label;
    std::vector<std::uint8_t> rgb, gray;
  };
  std::vector<Entry> entries;
  auto add_png = [&](const std::string& rel, std::int64_t label, int c, unsigned seed) {
    const auto px = make_image(h, w, c, seed);
    const std::string p = dir.file(rel);
    write_png8(p, h, w, c, px);
    entries.push_back({p, label, planar(px, h, w, c, 3), planar(px, h, w, c, 1)});
  };
  auto add_jpeg = [&](const std::string& rel, std::int64_t label, int c, unsigned seed) {
    const std::string p = dir.file(rel);
    write_jpeg(p, h, w, c, make_image(h, w, c, seed));
    entries.push_back({p, label, expected_jpeg(p, 3), expected_jpeg(p, 1)});
  };
  add_png("train/ant/a.png", 0, 3, 1);
  add_jpeg("train/ant/b.JPG", 0, 3, 2);
  add_png("train/ant/deep/er/c.PNG", 0, 4, 3);  // RGBA, nested two levels
  add_png("train/ant/z.png", 0, 1, 4);          // gray
  add_jpeg("train/bee/a.jpeg", 1, 1, 5);        // gray JPEG
  add_png("train/bee/b.png", 1, 2, 6);          // gray + alpha
  write_bytes(dir.file("train/bee/notes.txt"), {'n'});
  write_bytes(dir.file("train/bee/.hidden.png"), {0});
  add_png("test/bee/t.png", 1, 3, 7);
  std::sort(entries.begin(), entries.begin() + 6,
            [](const Entry& a, const Entry& b) { return a.path < b.path; });

  for (int channels : {3, 1}) {
    ReadOptions opt;
    opt.channels = channels;
    const TrainTest tt = load_dataset("imagefolder", dir.path.string(), opt);
    INFO(channels << " channels");
    REQUIRE(tt.train.size() == 6);
    REQUIRE(tt.test.size() == 1);
    CHECK(tt.train.num_classes == 2);
    CHECK((tt.train.channels == channels && tt.train.height == h && tt.train.width == w));
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const Dataset& d = i < 6 ? tt.train : tt.test;
      const auto k = static_cast<std::int64_t>(i < 6 ? i : i - 6);
      CHECK(d.labels[static_cast<std::size_t>(k)] == entries[i].label);
      check_image(d, k, channels == 3 ? entries[i].rgb : entries[i].gray, entries[i].path);
    }
  }
  SECTION("without train/ and test/ the root holds the classes and the test set is empty") {
    const TrainTest tt = load_image_folder((dir.path / "train").string());
    CHECK(tt.train.size() == 6);
    CHECK(tt.test.size() == 0);
    CHECK(tt.test.height == h);
    const nlohmann::json j = inspect(tt, {{0, 1, 2, 3, 4, 5}, {}});
    CHECK(j["test"] == 0);
    CHECK(j.contains("note"));
  }
}

TEST_CASE("ImageFolder errors name the files and sizes", "[data][image_folder]") {
  TempDir dir;
  write_png8(dir.file("a/1.png"), 8, 8, 3, make_image(8, 8, 3, 1));
  write_png8(dir.file("b/1.png"), 8, 8, 3, make_image(8, 8, 3, 2));
  const std::string root = dir.path.string();
  REQUIRE(load_image_folder(root).train.size() == 2);
  SECTION("mismatched image size") {
    const std::string p = dir.file("b/2.png");
    write_png8(p, 8, 6, 3, make_image(8, 6, 3, 3));
    REQUIRE_THROWS_WITH(load_image_folder(root), Contains(p) && Contains("is 8x6") &&
                                                     Contains("expected 8x8") &&
                                                     Contains(dir.file("a/1.png")));
  }
  SECTION("empty class folder") {
    fs::create_directories(dir.path / "c" / "sub");
    REQUIRE_THROWS_WITH(load_image_folder(root), Contains("holds no") && Contains("c"));
  }
  SECTION("test class not among the training classes") {
    write_png8(dir.file("train/a/1.png"), 8, 8, 3, make_image(8, 8, 3, 1));
    write_png8(dir.file("test/q/1.png"), 8, 8, 3, make_image(8, 8, 3, 1));
    REQUIRE_THROWS_WITH(load_image_folder(root), Contains("test/q") && Contains("not one of"));
  }
  SECTION("undecodable image, and skip_bad_images") {
    const std::string p = dir.file("a/0.png");  // sorts first: the size comes from the next
    write_bytes(p, {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0});
    REQUIRE_THROWS_WITH(load_image_folder(root), Contains(p) && Contains("corrupt PNG"));
    ReadOptions skip;
    skip.skip_bad_images = true;
    const TrainTest tt = load_image_folder(root, skip);
    CHECK(tt.train.skipped == 1);
    REQUIRE(tt.train.size() == 2);
    CHECK(tt.train.labels == std::vector<std::int64_t>{0, 1});
    check_image(tt.train, 0, planar(make_image(8, 8, 3, 1), 8, 8, 3, 3), "a/1.png");
  }
}

TEST_CASE("load_dataset rejects unknown names with the list; inspect reports the split",
          "[data][registry]") {
  REQUIRE_THROWS_WITH(load_dataset("cifar1000", "/tmp"),
                      Contains("cifar1000") && Contains("fashion-mnist") &&
                          Contains("cifar100-coarse") && Contains("tiny-imagenet") &&
                          Contains("imagefolder") && Contains("mnist"));
  TempDir dir;
  const CifarRecords train = cifar_records(10, true, 3), test = cifar_records(4, true, 4);
  write_bytes(dir.file("train.bin"), train.bytes);
  write_bytes(dir.file("test.bin"), test.bytes);
  const TrainTest tt = load_dataset("cifar100", dir.path.string());
  const Split split = train_val_split(10, 0.3, 1);
  const nlohmann::json j = inspect(tt, split);
  CHECK(j["dataset"] == "cifar100");
  CHECK(j["train"] == 7);
  CHECK(j["val"] == 3);
  CHECK(j["test"] == 4);
  CHECK(j["classes"] == 100);
  CHECK(j["shape"] == nlohmann::json::array({3, 32, 32}));
  for (int c = 0; c < 3; ++c) {
    double s = 0, s2 = 0;
    for (std::int64_t i : split.train) {
      for (int k = 0; k < 1024; ++k) {
        const double v = train.pixels[static_cast<std::size_t>(i * 3072 + c * 1024 + k)] / 255.0;
        s += v;
        s2 += v * v;
      }
    }
    const double n = 7.0 * 1024, mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
    CHECK(j["mean"][static_cast<std::size_t>(c)].get<double>() == Approx(mean).epsilon(1e-5));
    CHECK(j["std"][static_cast<std::size_t>(c)].get<double>() == Approx(sd).epsilon(1e-5));
  }
}

TEST_CASE("decoding speed of 64x64 JPEGs (printed, not asserted)", "[data][decode][timing]") {
  TempDir dir;
  std::vector<ImageFile> files;
  for (int i = 0; i < 2000; ++i) {
    const std::string p = dir.file("c/" + std::to_string(10000 + i) + ".JPEG");
    write_jpeg(p, 64, 64, 3, make_image(64, 64, 3, static_cast<unsigned>(i)));
    files.push_back({p, 0});
  }
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  std::size_t bytes = 0;
  for (const ImageFile& f : files)
    bytes += decode_image(f.path).pixels.size();
  const double one = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  const Dataset d = decode_image_files(files, 64, 64, 1, {}, "timing");
  const double all = std::chrono::duration<double>(clock::now() - t0).count();
  CHECK(bytes == 2000u * 64 * 64 * 3);
  CHECK(d.size() == 2000);
  std::printf(
      "decode 2000 64x64 JPEGs: %.0f images/s on one thread, %.0f images/s with "
      "decode_image_files (OpenMP)\n",
      2000 / one, 2000 / all);
}
