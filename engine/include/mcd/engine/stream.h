// Streams as the engine sees them: ordered queues of device work that run concurrently with
// each other unless one waits for another. Code that spreads work over streams (one per
// student in the trainer) uses these and stays device-agnostic: on the CPU, and on a backend
// without streams, every stream is the one in-order queue and all of this does nothing.
//
// The rule a caller must keep: a tensor written on one stream and read on another needs a
// stream_wait between them, and memory freed by the host is reused at once by the stream it
// was allocated on, so a tensor used by several streams must stay alive until the stream it
// was allocated on has waited for the others (the trainer holds such tensors to the end of a
// step, after its streams have joined).
#pragma once
#include <cstdint>

#include <mcd/engine/dtype.h>

namespace mcd {

// A non-owning name of one stream of a device.
struct StreamRef {
  Device device = Device::cpu();
  std::uintptr_t handle = 0;
  friend bool operator==(const StreamRef&, const StreamRef&) = default;
};

// The calling thread's current stream on `device`.
StreamRef current_stream(Device device);
// Work queued on `waiter` from now on runs after the work queued on `producer` so far. Both
// streams must belong to the same device.
void stream_wait(StreamRef waiter, StreamRef producer);

// A stream of `device` for the object's lifetime, taken from the device's pool and given back
// (not destroyed) with the object; its queued work still runs.
class PooledStream {
 public:
  explicit PooledStream(Device device);
  ~PooledStream();
  PooledStream(const PooledStream&) = delete;
  PooledStream& operator=(const PooledStream&) = delete;
  StreamRef ref() const { return ref_; }

 private:
  StreamRef ref_;
};

// Makes `stream` the calling thread's current stream on its device for the guard's lifetime.
class StreamGuard {
 public:
  explicit StreamGuard(StreamRef stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  StreamRef previous_;
};

}  // namespace mcd
