// The device the pipeline trains on, from run.device.
#pragma once
#include <string>

#include <mcd/engine/dtype.h>

namespace mcd::app {

// "cpu", or "cuda" (GPU 0) or "cuda:N" once the CUDA backend is installed. When this build has no
// CUDA backend or no GPU is usable, returns the CPU after saying so on stderr, so a configuration
// written for a GPU machine still runs anywhere. A GPU index the machine lacks is a ConfigError.
Device resolve_device(const std::string& requested);

}  // namespace mcd::app
