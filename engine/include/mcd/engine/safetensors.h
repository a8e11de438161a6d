// Checkpoints in the safetensors format: an 8-byte little-endian header length N, N bytes of
// JSON header (padded with spaces to a multiple of 8), then the raw little-endian tensor data
// with no gaps. Saving replaces the file atomically; loading validates the whole header.
#pragma once
#include <map>
#include <string>

#include <mcd/engine/state_dict.h>

namespace mcd {

struct SafetensorsFile {
  StateDict tensors;
  std::map<std::string, std::string> metadata;  // the header's "__metadata__"
};

// Writes float32 ("F32"), float64 ("F64") and int64 ("I64") CPU tensors, any layout (views
// are written contiguously), in key order. The file is written to `path + ".tmp"`, synced and
// renamed over `path`, so an existing file is either kept whole or replaced whole; on error
// the temporary file is removed and an mcd::Error names the path (and the key).
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a file written by any safetensors writer, restricted to F32, F64 and I64 tensors.
// Throws an mcd::Error naming the path and the tensor key or header field at fault: a short
// file, a header length past the end, invalid JSON, duplicate keys, an unknown dtype, a
// shape that disagrees with its byte range, ranges out of bounds, overlapping or with gaps.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace mcd
