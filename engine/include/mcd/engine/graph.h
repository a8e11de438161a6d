// Device graphs: the kernels a piece of host code queues on a stream, captured once and
// replayed with one launch each time after. A replay runs the captured kernels on the memory
// they used during the capture, without running any host code: the host code must queue the
// same work every time (fixed shapes, no host decisions that change), read its inputs from
// tensors that the caller refills in place, and leave its results in tensors the caller keeps.
// Memory allocated during the capture stays the graph's until it is destroyed.
//
// Graphs that never run at the same time may share their memory (one pool instead of one each):
// what one graph allocated and freed during its capture (its temporaries) the other may use too,
// so every tensor a graph leaves (its outputs) must have been read before the other graph's next
// replay starts (queued on the same stream before it, or read on the host). Tensors alive when a
// graph is captured are never handed to it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include <mcd/engine/stream.h>

namespace mcd {

class DeviceGraph {
 public:
  // Captures what `record` queues on `stream` (and on streams forked from it and joined back).
  // nullptr, without running `record`, where there are no graphs (the CPU, a backend without
  // them). Throws mcd::Error when the capture fails; the device is usable afterwards.
  static std::unique_ptr<DeviceGraph> capture(StreamRef stream, const std::function<void()>& record,
                                              const DeviceGraph* share_memory_with = nullptr);
  // Queues the captured work on `stream` (a stream of the graph's device).
  void replay(StreamRef stream) const;
  ~DeviceGraph();
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;

 private:
  DeviceGraph(Device device, std::uintptr_t handle) : device_(device), handle_(handle) {}
  Device device_;
  std::uintptr_t handle_;
};

}  // namespace mcd
