// Copies between the host and a device that do not make the host wait for the device, so that
// the host can queue the next piece of work while the device still runs the last one: a
// trainer uploads the next batch without waiting for the step before it, and reads a step's
// meters after it has queued the following step. On the host these are ordinary copies.
#pragma once
#include <memory>

#include <mcd/engine/device_backend.h>
#include <mcd/engine/tensor.h>

namespace mcd {

// Copies `src` into `dst` (same shape and dtype, no autograd). From the host to a contiguous
// device tensor it returns once src may be reused: the bytes are staged in page-locked memory
// and the device's current stream copies them after the work queued on it so far; work queued
// on that stream later sees the values (another stream needs stream_wait first). As for any op
// that writes a tensor, dst must stay alive until the stream it was allocated on is ordered
// after the copy (stream.h). Refused while that stream captures a graph. Any other pair of
// devices: copy_.
void copy_to_device_async(Tensor& dst, const Tensor& src);
// A new detached tensor on `device` holding src's values, copied as above when src is on the
// host.
Tensor to_device_async(const Tensor& src, Device device);

// A snapshot of a tensor's values on their way to the host. The copy is queued on the tensor's
// device's current stream, after the work queued there so far, and the host waits only in
// get() (and only if the copy has not arrived). A host tensor is copied at once. The source's
// memory is held until the copy has arrived (destroying a HostCopy still on its way waits for
// it), so the tensor may be dropped at once, whichever stream it was made on.
class HostCopy {
 public:
  HostCopy() = default;
  explicit HostCopy(const Tensor& t);
  HostCopy(HostCopy&&) noexcept;
  HostCopy& operator=(HostCopy&&) noexcept;
  HostCopy(const HostCopy&) = delete;
  HostCopy& operator=(const HostCopy&) = delete;
  ~HostCopy();

  bool defined() const { return pending_ != nullptr || host_.defined(); }
  // Whether get() would return without waiting.
  bool ready() const;
  // The values as a contiguous host tensor of the original shape and dtype; waits the first
  // time if the copy is still on its way.
  const Tensor& get();

 private:
  void wait_quietly() noexcept;  // before letting go of a copy on its way

  std::unique_ptr<DeviceBackend::PendingHostCopy> pending_;
  Tensor source_;  // the device memory being read, while pending_
  Shape shape_;
  DType dtype_ = DType::Float32;
  Tensor host_;
};

}  // namespace mcd
