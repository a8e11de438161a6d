// Non-blocking host<->device copies: the checks and views here, the staging in the backend.
#include <mcd/engine/transfer.h>

#include <cstring>

#include <mcd/engine/autograd.h>
#include <mcd/engine/error.h>

#include "dispatch.h"

namespace mcd {
namespace {

std::size_t byte_size(const Tensor& t) {
  return static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype());
}

}  // namespace

void copy_to_device_async(Tensor& dst, const Tensor& src) {
  MCD_CHECK(dst.defined() && src.defined(), "copy_to_device_async: undefined tensor");
  MCD_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(),
            "copy_to_device_async: destination {} {} but source {} {}", shape_str(dst.shape()),
            dtype_name(dst.dtype()), shape_str(src.shape()), dtype_name(src.dtype()));
  if (!(src.device().is_cpu() && detail::on_device(dst) && dst.is_contiguous())) {
    NoGradGuard no_grad;
    dst.copy_(src);
    return;
  }
  const Tensor host = detail::contiguous_data(src.detach());
  if (host.numel() == 0) return;
  require_device_backend(dst.device(), "copy_to_device_async")
      .copy_to_device_async(dst.raw_data(), dst.device(), host.raw_data(), byte_size(host));
}

Tensor to_device_async(const Tensor& src, Device device) {
  MCD_CHECK(src.defined(), "to_device_async: undefined tensor");
  if (src.device() == device) return src.detach();
  if (!src.device().is_cpu()) return src.detach().to(device);
  Tensor out = Tensor::empty(src.shape(), src.dtype(), device);
  copy_to_device_async(out, src);
  return out;
}

HostCopy::HostCopy(const Tensor& t) {
  MCD_CHECK(t.defined(), "HostCopy: undefined tensor");
  shape_ = t.shape();
  dtype_ = t.dtype();
  NoGradGuard no_grad;
  if (t.device().is_cpu()) {
    host_ = t.detach().clone();  // a snapshot: the caller may change t afterwards
    return;
  }
  // A strided view is compacted on the device first, in stream order with the copy.
  source_ = detail::contiguous_data(t.detach());
  pending_ = require_device_backend(t.device(), "HostCopy")
                 .start_copy_to_host(source_.raw_data(), t.device(), byte_size(source_));
}

HostCopy::HostCopy(HostCopy&&) noexcept = default;

HostCopy& HostCopy::operator=(HostCopy&& other) noexcept {
  if (this != &other) {
    wait_quietly();
    pending_ = std::move(other.pending_);
    source_ = std::move(other.source_);
    shape_ = std::move(other.shape_);
    dtype_ = other.dtype_;
    host_ = std::move(other.host_);
  }
  return *this;
}

HostCopy::~HostCopy() {
  wait_quietly();
}

void HostCopy::wait_quietly() noexcept {
  // The source may go back to its stream's cache only after the copy has read it. A failure
  // here would also fail the device's next call, which reports it.
  if (pending_ == nullptr) return;
  try {
    pending_->wait();
  } catch (...) {
  }
  pending_.reset();
  source_ = Tensor();
}

bool HostCopy::ready() const {
  return pending_ == nullptr || pending_->done();
}

const Tensor& HostCopy::get() {
  MCD_CHECK(defined(), "HostCopy::get: nothing was copied");
  if (pending_ != nullptr) {
    pending_->wait();
    Tensor out = Tensor::empty(shape_, dtype_);
    const std::size_t n = byte_size(out);
    if (n > 0) std::memcpy(out.raw_data(), pending_->data(), n);
    pending_.reset();
    source_ = Tensor();
    host_ = std::move(out);
  }
  return host_;
}

}  // namespace mcd
