// JPEG (libjpeg-turbo) and PNG (libpng) decoding with setjmp-based error recovery. The
// functions that call setjmp hold only trivially destructible locals and report failure by
// return value, so a longjmp never skips a C++ destructor; exceptions are thrown afterwards.
#include <mcd/data/image_decode.h>

#include <png.h>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstring>

// jpeglib.h needs FILE and size_t declared before it.
#include <jpeglib.h>

#include <mcd/engine/error.h>

#include "file_bytes.h"

namespace mcd::data {
namespace {

// Larger images are rejected before any allocation: no data set here comes close, and a
// corrupt header must not trigger a multi-gigabyte allocation.
constexpr std::uint64_t kMaxImageBytes = std::uint64_t{1} << 30;

constexpr std::size_t kMessageSize = 256;

bool is_jpeg(const std::uint8_t* p, std::size_t n) {
  return n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff;
}

bool is_png(const std::uint8_t* p, std::size_t n) {
  static constexpr std::uint8_t kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return n >= 8 && std::memcmp(p, kSig, 8) == 0;
}

void copy_message(char* dst, const char* src) {
  std::snprintf(dst, kMessageSize, "%s", src);
}

// ---- JPEG

struct JpegError {
  jpeg_error_mgr mgr;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg reports corrupt data (a truncated file included) as a warning and goes on with
// grey fill; a training set must not contain such images silently, so warnings are errors.
void jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) jpeg_error_exit(cinfo);
}

// Returns false with `message` set on failure. Writes (H, W, C) into out->pixels.
bool decode_jpeg(const std::uint8_t* data, std::size_t size, DecodedImage* out, char* message) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit_message;
  err.message[0] = '\0';
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    copy_message(message, err.message);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    copy_message(message, "CMYK/YCCK JPEGs are not supported");
    return false;
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_calc_output_dimensions(&cinfo);
  const std::uint64_t bytes = std::uint64_t{cinfo.output_width} * cinfo.output_height *
                              static_cast<std::uint64_t>(cinfo.out_color_components);
  if (bytes == 0 || bytes > kMaxImageBytes) {
    jpeg_destroy_decompress(&cinfo);
    std::snprintf(message, kMessageSize, "image of %ux%u with %d channels is empty or too large",
                  cinfo.output_width, cinfo.output_height, cinfo.out_color_components);
    return false;
  }
  jpeg_start_decompress(&cinfo);
  out->channels = cinfo.output_components;
  out->height = cinfo.output_height;
  out->width = cinfo.output_width;
  out->pixels.resize(static_cast<std::size_t>(bytes));
  const std::size_t stride = std::size_t{cinfo.output_width} * cinfo.output_components;
  while (cinfo.output_scanline < cinfo.output_height) {
    // Several rows per call let libjpeg-turbo upsample chroma without an extra copy.
    JSAMPROW rows[16];
    const unsigned left = cinfo.output_height - cinfo.output_scanline;
    const unsigned count = left < 16 ? left : 16;
    for (unsigned r = 0; r < count; ++r) {
      rows[r] = out->pixels.data() + (cinfo.output_scanline + r) * stride;
    }
    jpeg_read_scanlines(&cinfo, rows, count);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// ---- PNG

struct PngSource {
  const std::uint8_t* data;
  std::size_t size, pos;
  char* message;
};

[[noreturn]] void png_error_fn(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  copy_message(src->message, msg);
  png_longjmp(png, 1);
}

// Ancillary-chunk problems (bad gamma, iCCP profiles) do not affect the pixels.
void png_warning_fn(png_structp, png_const_charp) {}

void png_read_fn(png_structp png, png_bytep dst, png_size_t length) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (length > src->size - src->pos) png_error(png, "unexpected end of file (truncated PNG)");
  std::memcpy(dst, src->data + src->pos, length);
  src->pos += length;
}

bool decode_png(const std::uint8_t* data, std::size_t size, DecodedImage* out, char* message) {
  PngSource src{data, size, 0, message};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_error_fn, png_warning_fn);
  if (png == nullptr) {
    copy_message(message, "png_create_read_struct failed");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    copy_message(message, "png_create_info_struct failed");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &src, png_read_fn);
  png_read_info(png, info);
  // Palette -> RGB, gray below 8 bits -> 8 bits, tRNS -> an alpha channel.
  png_set_expand(png);
  if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  const int channels = png_get_channels(png, info);
  const std::uint64_t bytes = std::uint64_t{width} * height * static_cast<std::uint64_t>(channels);
  if (bytes == 0 || bytes > kMaxImageBytes || png_get_rowbytes(png, info) != width * channels) {
    std::snprintf(message, kMessageSize, "image of %ux%u with %d channels is empty or too large",
                  width, height, channels);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  out->channels = channels;
  out->height = height;
  out->width = width;
  out->pixels.resize(static_cast<std::size_t>(bytes));
  const std::size_t stride = std::size_t{width} * static_cast<std::size_t>(channels);
  // Interlaced images fill each row over several passes, in place.
  for (int pass = 0; pass < passes; ++pass) {
    for (png_uint_32 y = 0; y < height; ++y) {
      png_read_row(png, out->pixels.data() + y * stride, nullptr);
    }
  }
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// BT.601 luminance, rounded; integer weights sum to 1000 so white stays 255.
inline std::uint8_t luminance(std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  return static_cast<std::uint8_t>((299u * r + 587u * g + 114u * b + 500u) / 1000u);
}

}  // namespace

DecodedImage decode_image_bytes(const std::uint8_t* data, std::size_t size,
                                const std::string& name) {
  DecodedImage img;
  char message[kMessageSize] = {0};
  if (is_jpeg(data, size)) {
    if (!decode_jpeg(data, size, &img, message)) {
      fail("decode_image: corrupt JPEG '{}': {}", name, message);
    }
  } else if (is_png(data, size)) {
    if (!decode_png(data, size, &img, message)) {
      fail("decode_image: corrupt PNG '{}': {}", name, message);
    }
  } else {
    std::string head;
    for (std::size_t i = 0; i < size && i < 4; ++i)
      head += fmt::format("{:02x} ", data[i]);
    fail("decode_image: '{}' is neither a JPEG nor a PNG file ({} bytes, starting {})", name, size,
         size == 0 ? std::string("empty") : head);
  }
  return img;
}

DecodedImage decode_image(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_file_bytes(path, "decode_image");
  return decode_image_bytes(bytes.data(), bytes.size(), path);
}

void convert_to_planar(const DecodedImage& img, std::int64_t channels, std::uint8_t* dst) {
  MCD_CHECK(channels == 1 || channels == 3,
            "convert_to_planar: target channels = {}, expected 1 or 3", channels);
  const std::int64_t src_c = img.channels;
  MCD_CHECK(src_c >= 1 && src_c <= 4, "convert_to_planar: source has {} channels, expected 1..4",
            src_c);
  MCD_CHECK(static_cast<std::int64_t>(img.pixels.size()) == src_c * img.height * img.width,
            "convert_to_planar: {} pixel bytes for a {}x{}x{} image", img.pixels.size(), img.height,
            img.width, src_c);
  const std::int64_t plane = img.height * img.width;
  const std::uint8_t* src = img.pixels.data();
  const bool colour = src_c >= 3;  // 2 is gray + alpha, 4 is RGB + alpha
  if (channels == 3 && colour) {
    for (std::int64_t k = 0; k < plane; ++k) {
      dst[k] = src[k * src_c];
      dst[plane + k] = src[k * src_c + 1];
      dst[2 * plane + k] = src[k * src_c + 2];
    }
  } else if (channels == 3) {
    for (std::int64_t k = 0; k < plane; ++k) {
      const std::uint8_t v = src[k * src_c];
      dst[k] = v;
      dst[plane + k] = v;
      dst[2 * plane + k] = v;
    }
  } else if (colour) {
    for (std::int64_t k = 0; k < plane; ++k) {
      dst[k] = luminance(src[k * src_c], src[k * src_c + 1], src[k * src_c + 2]);
    }
  } else {
    for (std::int64_t k = 0; k < plane; ++k)
      dst[k] = src[k * src_c];
  }
}

}  // namespace mcd::data

namespace mcd::data {

bool has_image_extension(const std::string& file_name) {
  const std::size_t dot = file_name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = file_name.substr(dot + 1);
  for (char& c : ext)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

Dataset decode_image_files(const std::vector<ImageFile>& files, std::int64_t height,
                           std::int64_t width, std::int64_t num_classes, const ReadOptions& options,
                           const std::string& name) {
  MCD_CHECK(options.channels == 1 || options.channels == 3,
            "{}: ReadOptions.channels = {}, expected 1 or 3", name, options.channels);
  MCD_CHECK((height == 0) == (width == 0) && height >= 0 && width >= 0,
            "{}: expected image size {}x{} is invalid", name, height, width);
  const auto n = static_cast<std::int64_t>(files.size());
  Dataset d;
  d.name = name;
  d.channels = options.channels;
  d.num_classes = num_classes;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t label = files[static_cast<std::size_t>(i)].label;
    MCD_CHECK(label >= 0 && label < num_classes, "{}: '{}' has label {}, expected 0..{}", name,
              files[static_cast<std::size_t>(i)].path, label, num_classes - 1);
  }
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  std::vector<char> fatal(static_cast<std::size_t>(n), 0);
  std::vector<char> ok(static_cast<std::size_t>(n), 0);

  // Without a given size, the first decodable file sets it; decoding it here (in order)
  // keeps the reference image, and so the mismatch errors, independent of thread timing.
  std::int64_t begin = 0;
  std::string reference = fmt::format("{}x{}", height, width);
  DecodedImage first;
  if (height == 0) {
    for (; begin < n; ++begin) {
      const std::string& path = files[static_cast<std::size_t>(begin)].path;
      try {
        first = decode_image(path);
      } catch (const std::exception& e) {
        if (!options.skip_bad_images) throw;
        errors[static_cast<std::size_t>(begin)] = e.what();
        continue;
      }
      height = first.height;
      width = first.width;
      reference = fmt::format("{}x{}, the size of '{}'", height, width, path);
      break;
    }
    MCD_CHECK(n == 0 || begin < n, "{}: none of the {} image files could be decoded; first: {}",
              name, n, errors.empty() ? std::string() : errors[0]);
  }
  d.height = height;
  d.width = width;
  const std::int64_t numel = d.image_numel();
  d.pixels.resize(static_cast<std::size_t>(n * numel));
  if (begin < n && first.height > 0) {
    convert_to_planar(first, d.channels, d.pixels.data() + begin * numel);
    ok[static_cast<std::size_t>(begin)] = 1;
    ++begin;
  }

  // Files after the first fatal one are not decoded; every file before it is, so the
  // reported error is the first in file order whatever the scheduling.
  std::atomic<std::int64_t> first_fatal{n};
  auto note_fatal = [&first_fatal](std::int64_t i) {
    std::int64_t cur = first_fatal.load();
    while (i < cur && !first_fatal.compare_exchange_weak(cur, i)) {
    }
  };
#pragma omp parallel for schedule(dynamic, 4)
  for (std::int64_t i = begin; i < n; ++i) {
    if (i > first_fatal.load(std::memory_order_relaxed)) continue;
    const auto k = static_cast<std::size_t>(i);
    try {
      const DecodedImage img = decode_image(files[k].path);
      if (img.height != height || img.width != width) {
        errors[k] = fmt::format("{}: image '{}' is {}x{}, expected {}", name, files[k].path,
                                img.height, img.width, reference);
        fatal[k] = 1;
        note_fatal(i);
        continue;
      }
      convert_to_planar(img, d.channels, d.pixels.data() + i * numel);
      ok[k] = 1;
    } catch (const std::exception& e) {
      errors[k] = e.what();
      if (!options.skip_bad_images) {
        fatal[k] = 1;
        note_fatal(i);
      }
    }
  }
  if (first_fatal.load() < n) throw Error(errors[static_cast<std::size_t>(first_fatal.load())]);

  std::int64_t kept = 0;
  d.labels.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    if (!ok[static_cast<std::size_t>(i)]) continue;
    if (kept != i) {
      std::memmove(d.pixels.data() + kept * numel, d.pixels.data() + i * numel,
                   static_cast<std::size_t>(numel));
    }
    d.labels.push_back(files[static_cast<std::size_t>(i)].label);
    ++kept;
  }
  d.pixels.resize(static_cast<std::size_t>(kept * numel));
  d.skipped = n - kept;
  return d;
}

}  // namespace mcd::data
