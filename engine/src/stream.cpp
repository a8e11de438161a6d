// Engine streams (stream.h) over the registered device backend.
#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>
#include <mcd/engine/stream.h>

namespace mcd {

StreamRef current_stream(Device device) {
  if (device.is_cpu()) return {};
  return {device, require_device_backend(device, "current_stream").current_stream(device.index)};
}

void stream_wait(StreamRef waiter, StreamRef producer) {
  MCD_CHECK(waiter.device == producer.device,
            "stream_wait: a stream on {} cannot wait for a stream on {}", waiter.device.str(),
            producer.device.str());
  if (waiter.device.is_cpu() || waiter.handle == producer.handle) return;
  require_device_backend(waiter.device, "stream_wait")
      .stream_wait(waiter.device.index, waiter.handle, producer.handle);
}

PooledStream::PooledStream(Device device) : ref_{device, 0} {
  if (!device.is_cpu())
    ref_.handle = require_device_backend(device, "PooledStream").acquire_stream(device.index);
}

PooledStream::~PooledStream() {
  if (ref_.device.is_cpu()) return;
  if (DeviceBackend* b = device_backend(ref_.device.type))
    b->release_stream(ref_.device.index, ref_.handle);
}

StreamGuard::StreamGuard(StreamRef stream) : previous_(current_stream(stream.device)) {
  if (!stream.device.is_cpu())
    require_device_backend(stream.device, "StreamGuard")
        .set_current_stream(stream.device.index, stream.handle);
}

StreamGuard::~StreamGuard() {
  if (previous_.device.is_cpu()) return;
  if (DeviceBackend* b = device_backend(previous_.device.type))
    b->set_current_stream(previous_.device.index, previous_.handle);
}

}  // namespace mcd
