// DeviceGraph (graph.h) over the registered device backend.
#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>
#include <mcd/engine/graph.h>

namespace mcd {

std::unique_ptr<DeviceGraph> DeviceGraph::capture(StreamRef stream,
                                                  const std::function<void()>& record,
                                                  const DeviceGraph* share_memory_with) {
  if (stream.device.is_cpu()) return nullptr;
  MCD_CHECK(share_memory_with == nullptr || share_memory_with->device_ == stream.device,
            "DeviceGraph::capture: sharing memory with a graph of {} while capturing on {}",
            share_memory_with ? share_memory_with->device_.str() : "", stream.device.str());
  const std::uintptr_t handle =
      require_device_backend(stream.device, "DeviceGraph::capture")
          .capture_graph(stream.device.index, stream.handle, record,
                         share_memory_with != nullptr ? share_memory_with->handle_ : 0);
  if (handle == 0) return nullptr;
  return std::unique_ptr<DeviceGraph>(new DeviceGraph(stream.device, handle));
}

void DeviceGraph::replay(StreamRef stream) const {
  MCD_CHECK(stream.device == device_, "DeviceGraph::replay: a graph of {} on a stream of {}",
            device_.str(), stream.device.str());
  require_device_backend(device_, "DeviceGraph::replay")
      .replay_graph(device_.index, handle_, stream.handle);
}

DeviceGraph::~DeviceGraph() {
  if (DeviceBackend* b = device_backend(device_.type)) b->destroy_graph(device_.index, handle_);
}

}  // namespace mcd
