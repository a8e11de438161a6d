// File and gzip reading. The whole compressed file is read at once and inflated into one
// buffer presized from the gzip trailer (ISIZE), so a 47 MB IDX file inflates in one pass.
#include "file_bytes.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <mcd/engine/error.h>

namespace mcd::data::detail {

std::vector<std::uint8_t> read_file_bytes(const std::string& path, const char* op) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  MCD_CHECK(fs::exists(st), "{}: file '{}' does not exist", op, path);
  MCD_CHECK(!fs::is_directory(st), "{}: '{}' is a directory, expected a file", op, path);
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  MCD_CHECK(f != nullptr, "{}: cannot open '{}': {}", op, path, std::strerror(errno));
  const std::uintmax_t size = fs::file_size(path, ec);
  MCD_CHECK(!ec, "{}: cannot read the size of '{}': {}", op, path, ec.message());
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  const std::size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f.get());
  MCD_CHECK(got == bytes.size(), "{}: read {} of {} bytes from '{}': {}", op, got, bytes.size(),
            path, std::strerror(errno));
  return bytes;
}

bool is_gzip(const std::vector<std::uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

namespace {
struct InflateStream {
  z_stream zs{};
  InflateStream(const std::string& path, const char* op) {
    // 15 + 16: a gzip wrapper only, with its CRC-32 and length checked at the end.
    MCD_CHECK(inflateInit2(&zs, 15 + 16) == Z_OK, "{}: cannot initialise zlib for '{}'", op, path);
  }
  ~InflateStream() { inflateEnd(&zs); }
  InflateStream(const InflateStream&) = delete;
  InflateStream& operator=(const InflateStream&) = delete;
};
}  // namespace

std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& compressed,
                                 const std::string& path, const char* op) {
  MCD_CHECK(is_gzip(compressed), "{}: '{}' is not a gzip file", op, path);
  // ISIZE (the last four bytes) is the uncompressed size of the last member modulo 2^32: a
  // good first guess, never trusted for correctness, nor above deflate's 1032:1 maximum ratio.
  std::size_t guess = compressed.size() * 4;
  if (compressed.size() >= 18) {
    const std::uint8_t* t = compressed.data() + compressed.size() - 4;
    const std::size_t isize = std::size_t{t[0]} | std::size_t{t[1]} << 8 | std::size_t{t[2]} << 16 |
                              std::size_t{t[3]} << 24;
    if (isize >= compressed.size() / 2 && isize / 1032 <= compressed.size()) guess = isize;
  }
  std::vector<std::uint8_t> out(std::max<std::size_t>(guess, 4096));
  std::size_t produced = 0;
  std::size_t consumed = 0;

  InflateStream stream(path, op);
  z_stream& zs = stream.zs;
  for (;;) {
    if (produced == out.size()) out.resize(out.size() * 2);
    const std::size_t in_left = compressed.size() - consumed;
    const std::size_t out_left = out.size() - produced;
    // z_stream counts are 32-bit: feed at most UINT_MAX bytes per call.
    zs.next_in = const_cast<Bytef*>(compressed.data() + consumed);
    zs.avail_in = static_cast<uInt>(std::min<std::size_t>(in_left, UINT_MAX));
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(std::min<std::size_t>(out_left, UINT_MAX));
    const uInt avail_in_before = zs.avail_in;
    const uInt avail_out_before = zs.avail_out;
    const int ret = inflate(&zs, Z_NO_FLUSH);
    consumed += avail_in_before - zs.avail_in;
    produced += avail_out_before - zs.avail_out;

    if (ret == Z_STREAM_END) {
      if (consumed == compressed.size()) break;
      // Another gzip member may follow; anything else is trailing garbage.
      const bool next_member = compressed.size() - consumed >= 2 && compressed[consumed] == 0x1f &&
                               compressed[consumed + 1] == 0x8b;
      MCD_CHECK(next_member, "{}: '{}' has {} trailing bytes after the gzip stream", op, path,
                compressed.size() - consumed);
      MCD_CHECK(inflateReset(&zs) == Z_OK, "{}: zlib reset failed for '{}'", op, path);
      continue;
    }
    if (ret == Z_OK || ret == Z_BUF_ERROR) {
      if (produced == out.size()) continue;  // output full: grow and go on
      MCD_CHECK(consumed < compressed.size(),
                "{}: truncated gzip stream in '{}' (the compressed data ends after {} bytes "
                "before the end of the stream)",
                op, path, compressed.size());
      MCD_CHECK(ret == Z_OK, "{}: zlib made no progress on '{}'", op, path);
      continue;
    }
    fail("{}: corrupt gzip stream in '{}' ({}: {})", op, path, ret,
         zs.msg != nullptr ? zs.msg : "no message");
  }
  out.resize(produced);
  out.shrink_to_fit();
  return out;
}

std::vector<std::uint8_t> read_maybe_gzip(const std::string& path, const char* op) {
  std::vector<std::uint8_t> bytes = read_file_bytes(path, op);
  if (!is_gzip(bytes)) return bytes;
  return gunzip(bytes, path, op);
}

}  // namespace mcd::data::detail
