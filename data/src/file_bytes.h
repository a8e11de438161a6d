// Whole-file reading for the dataset readers: raw bytes, and gzip streams inflated in memory.
// Errors name the calling op and the file path; a truncated or corrupt gzip stream never
// yields partial data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mcd::data::detail {

std::vector<std::uint8_t> read_file_bytes(const std::string& path, const char* op);

bool is_gzip(const std::vector<std::uint8_t>& bytes);

// Inflates every gzip member of `compressed` (concatenated members are legal gzip).
std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& compressed,
                                 const std::string& path, const char* op);

// The file's contents, inflated when it starts with the gzip magic, as-is otherwise.
std::vector<std::uint8_t> read_maybe_gzip(const std::string& path, const char* op);

}  // namespace mcd::data::detail
