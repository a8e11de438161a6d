// NCCL for data-parallel replicas on several GPUs (nccl_collectives.h). The library is opened
// with dlopen on first use and its functions looked up by name: the binaries carry no link to
// NCCL, and only this file needs its header.
#include <mcd/kernels/cuda/nccl_collectives.h>

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <type_traits>

#include <fmt/format.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/error.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

#if __has_include(<nccl.h>)
#include <nccl.h>
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)  // ncclAvg
#define MCD_HAVE_NCCL_HEADER 1
#endif
#endif

namespace mcd::kernels::cuda {

#ifdef MCD_HAVE_NCCL_HEADER
namespace {

// The NCCL functions used here, named as NCCL names them so that a failed check's message
// shows the call as NCCL's documentation does.
struct NcclApi {
  decltype(&::ncclGetVersion) ncclGetVersion = nullptr;
  decltype(&::ncclGetErrorString) ncclGetErrorString = nullptr;
  decltype(&::ncclCommInitAll) ncclCommInitAll = nullptr;
  decltype(&::ncclCommDestroy) ncclCommDestroy = nullptr;
  decltype(&::ncclCommAbort) ncclCommAbort = nullptr;
  decltype(&::ncclAllReduce) ncclAllReduce = nullptr;
  decltype(&::ncclGroupStart) ncclGroupStart = nullptr;
  decltype(&::ncclGroupEnd) ncclGroupEnd = nullptr;
  int version = 0;
  std::string error;  // why NCCL cannot be used; empty when it can
};

// ncclAvg came with NCCL 2.10.
constexpr int kOldestVersion = 21000;

const NcclApi& nccl() {
  static const NcclApi api = [] {
    NcclApi a;
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      a.error = fmt::format("cannot load libnccl.so.2 ({})", dlerror());
      return a;
    }
    auto find = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (fn == nullptr && a.error.empty()) a.error = fmt::format("libnccl.so.2 lacks {}", name);
    };
    find(a.ncclGetVersion, "ncclGetVersion");
    find(a.ncclGetErrorString, "ncclGetErrorString");
    find(a.ncclCommInitAll, "ncclCommInitAll");
    find(a.ncclCommDestroy, "ncclCommDestroy");
    find(a.ncclCommAbort, "ncclCommAbort");
    find(a.ncclAllReduce, "ncclAllReduce");
    find(a.ncclGroupStart, "ncclGroupStart");
    find(a.ncclGroupEnd, "ncclGroupEnd");
    if (!a.error.empty()) return a;
    if (a.ncclGetVersion(&a.version) != ncclSuccess)
      a.error = "ncclGetVersion failed";
    else if (a.version < kOldestVersion)
      a.error =
          fmt::format("NCCL {} is older than 2.10, which averaging needs (ncclAvg)", a.version);
    return a;
  }();
  return api;
}

const NcclApi& require_nccl() {
  const NcclApi& api = nccl();
  MCD_CHECK(api.error.empty(), "NCCL: {}", api.error);
  return api;
}

void check_nccl(ncclResult_t status, const char* call, const char* file, int line) {
  if (status == ncclSuccess) return;
  throw_call_error(call, file, line,
                   fmt::format("{} (ncclResult_t {})", nccl().ncclGetErrorString(status),
                               static_cast<int>(status)));
}

#define MCD_NCCL_CHECK(call) check_nccl((call), #call, __FILE__, __LINE__)

// Ends the group it started, also when a call inside fails: a group left open would make this
// thread's later NCCL calls part of it.
class GroupScope {
 public:
  explicit GroupScope(const NcclApi& api) : api_(api) { MCD_NCCL_CHECK(api_.ncclGroupStart()); }
  ~GroupScope() noexcept(false) {
    if (std::uncaught_exceptions() > entered_)
      (void)api_.ncclGroupEnd();  // the first error is the one to report
    else
      MCD_NCCL_CHECK(api_.ncclGroupEnd());
  }
  GroupScope(const GroupScope&) = delete;
  GroupScope& operator=(const GroupScope&) = delete;

 private:
  const NcclApi& api_;
  int entered_ = std::uncaught_exceptions();
};

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::Float32:
      return ncclFloat32;
    case DType::Float64:
      return ncclFloat64;
    default:
      fail("NcclCollectives: only float32 and float64 tensors are averaged, got {}", dtype_name(t));
  }
}

}  // namespace

struct NcclCollectives::Communicators {
  std::vector<int> devices;
  std::vector<ncclComm_t> comms;
  std::mutex mutex;
  std::atomic<bool> aborted{false};  // the communicators are gone (ncclCommAbort frees them)

  // Every replica's communicator, so that the others' pending operations fail too (each
  // communicator waits only for its own abort), and none is used again.
  void abort_all() {
    std::lock_guard<std::mutex> lock(mutex);
    if (aborted.exchange(true)) return;
    for (ncclComm_t c : comms)
      if (c != nullptr) (void)nccl().ncclCommAbort(c);  // nothing to report a failure to
  }
  ~Communicators() {
    if (aborted) return;
    for (ncclComm_t c : comms)
      if (c != nullptr) (void)nccl().ncclCommDestroy(c);
  }
};

class NcclCollectives::Replica final : public Collective {
 public:
  Replica(Communicators& group, int rank)
      : group_(group),
        comm_(group.comms[static_cast<std::size_t>(rank)]),
        size_(static_cast<int>(group.comms.size())),
        rank_(rank),
        device_(group.devices[static_cast<std::size_t>(rank)]) {}
  int size() const override { return size_; }
  int rank() const override { return rank_; }
  bool capturable() const override { return true; }

  void all_reduce_mean(const std::vector<Tensor>& tensors) override {
    const NcclApi& api = require_nccl();
    MCD_CHECK(!group_.aborted, "NcclCollectives: the group was aborted (a replica failed)");
    // Everything is checked before the group starts, so that a bad argument fails before any
    // NCCL work is queued (the other replicas would wait for it).
    for (const Tensor& t : tensors) {
      if (!t.defined()) continue;
      MCD_CHECK(t.device() == Device::cuda(device_),
                "NcclCollectives: replica {} (cuda:{}) was given a tensor on {}", rank_, device_,
                t.device().str());
      (void)nccl_type(t.dtype());
    }
    NoGradGuard no_grad;
    const DeviceGuard guard(device_);
    // NCCL reads and writes dense buffers: a view (a gradient may be a transposed one) is
    // reduced in a contiguous copy, written back after the group, all on the current stream.
    std::vector<Tensor> dense(tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (tensors[i].defined())
        dense[i] = tensors[i].is_contiguous() ? tensors[i] : tensors[i].contiguous();
    const cudaStream_t stream = current_stream(device_).get();
    {
      const GroupScope group(api);
      for (const Tensor& t : dense) {
        if (!t.defined() || t.numel() == 0) continue;
        void* data = Tensor(t).raw_data();
        MCD_NCCL_CHECK(api.ncclAllReduce(data, data, static_cast<std::size_t>(t.numel()),
                                         nccl_type(t.dtype()), ncclAvg, comm_, stream));
      }
    }
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (dense[i].defined() && !dense[i].shares_storage_with(tensors[i]))
        Tensor(tensors[i]).copy_(dense[i]);
  }

  // NCCL has no way to pass the reason along: the others' operations just fail.
  void abort(const std::string&) override { group_.abort_all(); }

 private:
  Communicators& group_;
  ncclComm_t comm_;
  int size_, rank_, device_;
};

NcclCollectives::NcclCollectives(const std::vector<int>& devices) {
  const NcclApi& api = require_nccl();
  MCD_CHECK(!devices.empty(), "NcclCollectives: no devices");
  for (std::size_t i = 0; i < devices.size(); ++i) {
    check_device(devices[i]);
    MCD_CHECK(std::count(devices.begin(), devices.end(), devices[i]) == 1,
              "NcclCollectives: device {} appears twice (one replica per GPU)", devices[i]);
  }
  comms_ = std::make_unique<Communicators>();
  comms_->devices = devices;
  comms_->comms.assign(devices.size(), nullptr);
  MCD_NCCL_CHECK(
      api.ncclCommInitAll(comms_->comms.data(), static_cast<int>(devices.size()), devices.data()));
  for (std::size_t r = 0; r < devices.size(); ++r)
    replicas_.push_back(std::make_unique<Replica>(*comms_, static_cast<int>(r)));
}

bool NcclCollectives::available(std::string* why) {
  const NcclApi& api = nccl();
  if (why != nullptr) *why = api.error;
  return api.error.empty();
}

int NcclCollectives::version() {
  return require_nccl().version;
}

#else  // built without a usable nccl.h: the same interface, always unavailable

struct NcclCollectives::Communicators {
  std::vector<int> devices;
};
class NcclCollectives::Replica : public Collective {};

NcclCollectives::NcclCollectives(const std::vector<int>&) {
  fail(
      "NcclCollectives: this build has no NCCL (no nccl.h of version 2.10 or later was found when "
      "it was built)");
}

bool NcclCollectives::available(std::string* why) {
  if (why != nullptr)
    *why =
        "this build has no NCCL (no nccl.h of version 2.10 or later was found when it was built)";
  return false;
}

int NcclCollectives::version() {
  fail(
      "NcclCollectives: this build has no NCCL (no nccl.h of version 2.10 or later was found when "
      "it was built)");
}

#endif

NcclCollectives::~NcclCollectives() = default;

int NcclCollectives::size() const {
  return static_cast<int>(replicas_.size());
}

int NcclCollectives::device(int rank) const {
  MCD_CHECK(rank >= 0 && rank < size(), "NcclCollectives: replica {} of {}", rank, size());
  return comms_->devices[static_cast<std::size_t>(rank)];
}

Collective& NcclCollectives::replica(int rank) {
  MCD_CHECK(rank >= 0 && rank < size(), "NcclCollectives: replica {} of {}", rank, size());
  return *replicas_[static_cast<std::size_t>(rank)];
}

}  // namespace mcd::kernels::cuda
