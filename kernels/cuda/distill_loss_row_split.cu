// The fused loss for long rows: each (sample, student) row is split over a cluster of up to 8
// blocks (sm_90 thread block clusters), each caching its slice of z (at most 32 KiB) in shared
// memory, so z is read from DRAM once while six or so blocks share an SM, where a block caching a
// whole 128 KiB row leaves one per SM and the memory idle between its passes. Per slice:
//   A  z to shared memory (16-byte packs where every row start is aligned), slice max;
//   B  s1 = sum exp(z - max), s2 = sum exp((z - max) / tau) in double, from shared memory;
//   C  teacher terms and sum qT (z - max) in double, and dL/dz (or the JVP dots).
// Row-wide max and sums go through distributed shared memory: every warp of the cluster adds the
// same 32 warp partials in the same butterfly, so all threads get the same bits in a fixed
// order, and each reduction of a launch has its own slots, so none is rewritten while a peer may
// read it. Bytes per forward row: z, qT, log qT (unless derived from qT) read once, dL/dz
// written once, as the CPU kernel's contract asks.
#include <cooperative_groups.h>

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

#include "distill_loss_variants.cuh"

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define MCD_ROW_SPLIT_CLUSTERS 1
#endif

namespace mcd::kernels::cuda::detail {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;  // the portable cluster size
constexpr std::int64_t kSliceBytes = 32 * 1024;
// Loads in flight per thread and stream: pass A streams z alone (4 loads); pass C streams two
// or three arrays (2 packs each, 4 scalars on the scalar path). At six blocks per SM that keeps
// 25-50 KB in flight per SM, about what DRAM latency times an SM's share of bandwidth needs.
constexpr int kUnrollA = 4;
template <int VEC>
constexpr int kUnroll = VEC == 1 ? 4 : 2;
// Six blocks of 32 KiB slices fit an SM's shared memory; registers must not allow fewer
// (float64 is only checked, not timed: four).
template <class T>
constexpr int kMinBlocks = sizeof(T) == 4 ? 6 : 4;
static_assert(kWarps * kMaxCluster <= 32, "one lane per warp of the cluster in the reductions");

struct Plan {
  int cluster;
  std::int64_t slice;  // elements per block, a multiple of 4 so that slices start 16-byte aligned
  std::size_t smem;
};

// The fewest blocks (a power of two, at most 8) whose slices fit kSliceBytes; longer rows get
// longer slices.
Plan plan_for(std::int64_t v, std::size_t elem_bytes) {
  const std::int64_t row_bytes = v * static_cast<std::int64_t>(elem_bytes);
  std::int64_t c = 1;
  while (c < kMaxCluster && c * kSliceBytes < row_bytes)
    c *= 2;
  const std::int64_t slice = ((v + c - 1) / c + 3) / 4 * 4;
  return {static_cast<int>((v + slice - 1) / slice), slice,
          static_cast<std::size_t>(slice) * elem_bytes};
}

#ifdef MCD_ROW_SPLIT_CLUSTERS

using Slot = double[kWarps][3];  // one reduction's warp partials in one block

// Row-wide max: lane l of every warp reads warp l % kWarps of block l / kWarps.
__device__ double cluster_max(double x, Slot& slot) {
  const cg::cluster_group cluster = cg::this_cluster();
  x = warp_max_t(x);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (lane == 0) slot[threadIdx.x / 32][0] = x;
  cluster.sync();  // release/acquire: every block's slot is visible cluster-wide
  const int peer = lane / kWarps;
  x = peer < static_cast<int>(cluster.num_blocks())
          ? cluster.map_shared_rank(&slot[lane % kWarps][0], peer)[0]
          : -std::numeric_limits<double>::infinity();
  return warp_max_t(x);
}

template <int N>
__device__ void cluster_sum(double (&x)[N], Slot& slot) {
  static_assert(N <= 3, "a slot holds three values per warp");
  const cg::cluster_group cluster = cg::this_cluster();
  warp_sum(x);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (lane == 0)
#pragma unroll
    for (int j = 0; j < N; ++j)
      slot[threadIdx.x / 32][j] = x[j];
  cluster.sync();
  const int peer = lane / kWarps;
  const bool has = peer < static_cast<int>(cluster.num_blocks());
  const double* src = has ? cluster.map_shared_rank(&slot[lane % kWarps][0], peer) : nullptr;
#pragma unroll
  for (int j = 0; j < N; ++j)
    x[j] = has ? src[j] : 0.0;
  warp_sum(x);
}

// Pass A then B: the slice of z into shared memory, and the row's max, s1 and s2. Each thread
// rereads in pass B exactly the elements it wrote in pass A, so no block barrier is needed.
template <class T, int VEC>
__device__ void row_stats(const T* __restrict__ z, std::int64_t lo, std::int64_t hi, T inv_tau,
                          T* zc, Slot& slot_max, Slot& slot_s, T& m, double (&s)[2]) {
  constexpr std::int64_t stride = kThreads * VEC;
  const std::int64_t first = lo + static_cast<std::int64_t>(threadIdx.x) * VEC;
  T mx = -std::numeric_limits<T>::infinity();
  for (std::int64_t c0 = first; c0 < hi; c0 += kUnrollA * stride) {
    Pack<T, VEC> p[kUnrollA] = {};
#pragma unroll
    for (int u = 0; u < kUnrollA; ++u)
      if (c0 + u * stride < hi) p[u] = load_pack<T, VEC>(z + c0 + u * stride);
#pragma unroll
    for (int u = 0; u < kUnrollA; ++u) {
      const std::int64_t c = c0 + u * stride;
      if (c >= hi) continue;
      store_pack<T, VEC>(zc + (c - lo), p[u]);
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        mx = p[u].v[e] > mx ? p[u].v[e] : mx;
    }
  }
  m = static_cast<T>(cluster_max(static_cast<double>(mx), slot_max));
  s[0] = s[1] = 0.0;
#pragma unroll 4
  for (std::int64_t c = first; c < hi; c += stride) {
    const Pack<T, VEC> p = load_pack<T, VEC>(zc + (c - lo));
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const T d = p.v[e] - m;
      s[0] += static_cast<double>(exp_t(d));
      s[1] += static_cast<double>(exp_t(d * inv_tau));
    }
  }
  cluster_sum(s, slot_s);
}

template <class T, int VEC, bool LOGQ>
__device__ void forward_slice(const LossArgs<T>& a, int s, std::int64_t i, std::int64_t lo,
                              std::int64_t hi, T* zc, Slot* slots) {
  constexpr std::int64_t stride = kThreads * VEC;
  const std::int64_t v = a.v, r = s * a.b + i;
  const T* __restrict__ z = a.logits[s] + i * v;
  const T* __restrict__ qt = a.qt != nullptr ? a.qt + i * v : nullptr;
  const T* __restrict__ lqt = a.qt != nullptr && !LOGQ ? a.lqt + i * v : nullptr;
  T* __restrict__ grad = a.grad != nullptr ? a.grad + r * v : nullptr;
  const T inv_tau = static_cast<T>(a.inv_tau);
  T mx;
  double st[2];
  row_stats<T, VEC>(z, lo, hi, inv_tau, zc, slots[0], slots[1], mx, st);
  const double md = static_cast<double>(mx);
  const std::int64_t y = a.labels[i];
  const double al = static_cast<double>(a.alpha[r]), be = static_cast<double>(a.beta[r]);
  const T tca = static_cast<T>(al * a.inv_b);
  const T tcb = static_cast<T>(qt != nullptr ? a.tau * be * a.inv_b : 0.0);
  const T ip = static_cast<T>(1.0 / st[0]), iq = static_cast<T>(1.0 / st[1]);
  const bool zero_grad = tca == T(0) && tcb == T(0);

  double t[3] = {0.0, 0.0, 0.0};  // sum qT log qT (qT > 0), sum qT, sum qT (z - max)
  const std::int64_t first = lo + static_cast<std::int64_t>(threadIdx.x) * VEC;
  for (std::int64_t c0 = first; c0 < hi; c0 += kUnroll<VEC> * stride) {
    Pack<T, VEC> qp[kUnroll<VEC>] = {}, lp[kUnroll<VEC>] = {};
    if (qt != nullptr) {
#pragma unroll
      for (int u = 0; u < kUnroll<VEC>; ++u) {
        const std::int64_t c = c0 + u * stride;
        if (c >= hi) continue;
        qp[u] = load_pack<T, VEC>(qt + c);
        if constexpr (!LOGQ) lp[u] = load_pack<T, VEC>(lqt + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll<VEC>; ++u) {
      const std::int64_t c = c0 + u * stride;
      if (c >= hi) continue;
      const Pack<T, VEC> zp = load_pack<T, VEC>(zc + (c - lo));
      if (qt != nullptr) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const double q = static_cast<double>(qp[u].v[e]);
          if (q > 0.0) {
            if constexpr (LOGQ)
              t[0] += q * static_cast<double>(log_t(qp[u].v[e]));
            else
              t[0] += q * static_cast<double>(lp[u].v[e]);
          }
          t[1] += q;
          t[2] += q * (static_cast<double>(zp.v[e]) - md);
        }
      }
      if (grad == nullptr) continue;
      Pack<T, VEC> gp;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        if (zero_grad) {
          gp.v[e] = T(0);
          continue;
        }
        const T d = zp.v[e] - mx;
        T val = tca * (exp_t(d) * ip);
        if (qt != nullptr) val += tcb * (exp_t(d * inv_tau) * iq - qp[u].v[e]);
        if (c + e == y) val -= tca;
        gp.v[e] = val;
      }
      store_pack<T, VEC>(grad + c, gp);
    }
  }
  cluster_sum(t, slots[2]);
  if (cg::this_cluster().block_rank() != 0 || threadIdx.x != 0) return;
  const double ce = y >= 0 && y < v ? (md - static_cast<double>(z[y])) + log(st[0])
                                    : std::numeric_limits<double>::quiet_NaN();
  const double kl = qt != nullptr ? t[0] - t[2] * a.inv_tau + log(st[1]) * t[1] : 0.0;
  a.ce[r] = static_cast<T>(ce);
  a.kl[r] = static_cast<T>(kl);
  a.partials[r] = al * ce + (qt != nullptr ? a.tau * a.tau * be * kl : 0.0);
}

template <class T, int VEC>
__device__ void jvp_slice(const LossArgs<T>& a, int s, std::int64_t i, std::int64_t lo,
                          std::int64_t hi, T* zc, Slot* slots) {
  constexpr std::int64_t stride = kThreads * VEC;
  const std::int64_t v = a.v, r = s * a.b + i;
  const bool leader = cg::this_cluster().block_rank() == 0 && threadIdx.x == 0;
  const T* __restrict__ zt = a.tangents[s] != nullptr ? a.tangents[s] + i * v : nullptr;
  double ce_t = 0.0, kl_t = 0.0;
  if (zt != nullptr) {  // uniform across the cluster
    const T* __restrict__ z = a.logits[s] + i * v;
    const T* __restrict__ qt = a.qt != nullptr ? a.qt + i * v : nullptr;
    const T inv_tau = static_cast<T>(a.inv_tau);
    T mx;
    double st[2];
    row_stats<T, VEC>(z, lo, hi, inv_tau, zc, slots[0], slots[1], mx, st);
    const double iq = 1.0 / st[1];
    double d[2] = {0.0, 0.0};  // sum e1 zt, sum (q - qT) zt
    const std::int64_t first = lo + static_cast<std::int64_t>(threadIdx.x) * VEC;
    for (std::int64_t c0 = first; c0 < hi; c0 += kUnroll<VEC> * stride) {
      Pack<T, VEC> tp[kUnroll<VEC>] = {}, qp[kUnroll<VEC>] = {};
#pragma unroll
      for (int u = 0; u < kUnroll<VEC>; ++u) {
        const std::int64_t c = c0 + u * stride;
        if (c >= hi) continue;
        tp[u] = load_pack<T, VEC>(zt + c);
        if (qt != nullptr) qp[u] = load_pack<T, VEC>(qt + c);
      }
#pragma unroll
      for (int u = 0; u < kUnroll<VEC>; ++u) {
        const std::int64_t c = c0 + u * stride;
        if (c >= hi) continue;
        const Pack<T, VEC> zp = load_pack<T, VEC>(zc + (c - lo));
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const T dz = zp.v[e] - mx;
          const double tv = static_cast<double>(tp[u].v[e]);
          d[0] += static_cast<double>(exp_t(dz)) * tv;
          if (qt != nullptr)
            d[1] +=
                (static_cast<double>(exp_t(dz * inv_tau)) * iq - static_cast<double>(qp[u].v[e])) *
                tv;
        }
      }
    }
    cluster_sum(d, slots[2]);
    if (!leader) return;
    const std::int64_t y = a.labels[i];
    ce_t = y >= 0 && y < v ? d[0] / st[0] - static_cast<double>(zt[y])
                           : std::numeric_limits<double>::quiet_NaN();
    kl_t = d[1] * a.inv_tau;
  }
  if (!leader) return;
  a.ce[r] = static_cast<T>(ce_t);
  a.kl[r] = static_cast<T>(kl_t);
  a.partials[r] = static_cast<double>(a.alpha[r]) * ce_t +
                  (a.qt != nullptr ? a.tau * a.tau * static_cast<double>(a.beta[r]) * kl_t : 0.0);
}

#endif  // MCD_ROW_SPLIT_CLUSTERS

// One cluster per row r = i * K + s (the K students of a sample side by side, sharing the
// teacher row through L2); block rank j of the cluster owns [j * slice, (j + 1) * slice).
template <class T, int VEC, bool JVP, bool LOGQ>
__global__ void __launch_bounds__(kThreads, kMinBlocks<T>)
    distill_loss_row_split_kernel(const LossArgs<T> a, std::int64_t slice) {
#ifdef MCD_ROW_SPLIT_CLUSTERS
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  __shared__ Slot slots[3];  // max; s1, s2; the last pass's sums
  __shared__ double scratch[kGroupScratch];
  const cg::cluster_group cluster = cg::this_cluster();
  const std::int64_t row = blockIdx.x / cluster.num_blocks();
  const std::int64_t lo = cluster.block_rank() * slice;
  const std::int64_t hi = lo + slice < a.v ? lo + slice : a.v;
  T* zc = reinterpret_cast<T*>(dynamic_smem);
  const int s = static_cast<int>(row % a.k);
  if constexpr (JVP)
    jvp_slice<T, VEC>(a, s, row / a.k, lo, hi, zc, slots);
  else
    forward_slice<T, VEC, LOGQ>(a, s, row / a.k, lo, hi, zc, slots);
  cluster.sync();  // no block leaves (freeing its slots) while a peer may still read them
  last_block_mean(a.counter, a.partials, a.k, a.b, a.loss, scratch);
#endif
}

// A launch of `blocks` blocks (a multiple of p.cluster) in clusters of p.cluster, with the plan's
// shared memory; `attr` holds the cluster dimension and must outlive the returned config.
cudaLaunchConfig_t cluster_launch(const Plan& p, std::int64_t blocks, cudaStream_t stream,
                                  cudaLaunchAttribute& attr) {
  attr = {};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(p.cluster);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = p.smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  return config;
}

// Whether the GPU can run a cluster of `p.cluster` blocks of `kernel` at all: the blocks of a
// cluster must be resident together on one GPC, which a partitioned GPU (MIG) or a smaller part
// may not offer for eight blocks of this shared memory. Asked once per kernel, device and plan
// (the answer does not change while the process runs).
bool cluster_fits(const void* kernel, const Plan& p) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int, std::size_t>, bool> known;
  const int device = current_device();
  const auto key = std::make_tuple(kernel, device, p.cluster, p.smem);
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = known.find(key); it != known.end()) return it->second;
  allow_dynamic_shared_memory(kernel, p.smem);
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_launch(p, p.cluster, nullptr, attr);
  int clusters = 0;
  MCD_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  return known[key] = clusters > 0;
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

template <class T, bool JVP>
using SplitKernel = void (*)(LossArgs<T>, std::int64_t);

template <class T, bool JVP, int VEC>
SplitKernel<T, JVP> pick(bool log_of_prob) {
  if constexpr (JVP)
    return distill_loss_row_split_kernel<T, VEC, true, false>;
  else
    return log_of_prob ? distill_loss_row_split_kernel<T, VEC, false, true>
                       : distill_loss_row_split_kernel<T, VEC, false, false>;
}

}  // namespace

bool row_split_applies(std::int64_t v, std::size_t elem_bytes) {
  if (v < 1) return false;
  const int device = current_device();
  int clusters = 0;
  MCD_CUDA_CHECK(cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device));
  if (clusters == 0) return false;
  cudaFuncAttributes attr{};
  MCD_CUDA_CHECK(
      cudaFuncGetAttributes(&attr, distill_loss_row_split_kernel<float, 1, false, false>));
  if (attr.ptxVersion < 90) return false;  // built without cluster support: the body is empty
  const Plan p = plan_for(v, elem_bytes);
  if (p.smem + attr.sharedSizeBytes > max_shared_memory_per_block(device)) return false;
  // Every variant of a dtype has the same shared memory and at most the registers the launch
  // bounds allow, so one answers for all.
  const void* representative =
      elem_bytes == sizeof(float)
          ? reinterpret_cast<const void*>(distill_loss_row_split_kernel<float, 1, false, false>)
          : reinterpret_cast<const void*>(distill_loss_row_split_kernel<double, 1, false, false>);
  return cluster_fits(representative, p);
}

template <class T, bool JVP>
void launch_row_split(const LossArgs<T>& a, bool log_of_prob, cudaStream_t stream) {
  MCD_CUDA_REQUIRE(row_split_applies(a.v, sizeof(T)),
                   "distill_loss (CUDA): row_split needs thread block clusters (sm_90) and a " +
                       std::to_string(a.v) + "-element row split 8 ways in shared memory");
  const Plan p = plan_for(a.v, sizeof(T));
  const std::int64_t blocks = a.k * a.b * p.cluster;
  MCD_CUDA_REQUIRE(
      blocks <= std::numeric_limits<int>::max(),
      "distill_loss (CUDA): " + std::to_string(blocks) + " blocks exceed the grid limit");
  constexpr int kVec = 16 / sizeof(T);
  bool vec = a.v % kVec == 0 && aligned16(a.qt) && aligned16(a.lqt) && aligned16(a.grad);
  for (int s = 0; s < a.k; ++s)
    vec = vec && aligned16(a.logits[s]) && aligned16(a.tangents[s]);
  const SplitKernel<T, JVP> kernel =
      vec ? pick<T, JVP, kVec>(log_of_prob) : pick<T, JVP, 1>(log_of_prob);
  MCD_CUDA_REQUIRE(cluster_fits(reinterpret_cast<const void*>(kernel), p),
                   "distill_loss (CUDA): this GPU cannot co-schedule a cluster of " +
                       std::to_string(p.cluster) + " row_split blocks with " +
                       std::to_string(p.smem) + " bytes of shared memory each");
  allow_dynamic_shared_memory(kernel, p.smem);
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_launch(p, blocks, stream, attr);
  MCD_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, a, p.slice));
}

template void launch_row_split<float, false>(const LossArgs<float>&, bool, cudaStream_t);
template void launch_row_split<float, true>(const LossArgs<float>&, bool, cudaStream_t);
template void launch_row_split<double, false>(const LossArgs<double>&, bool, cudaStream_t);
template void launch_row_split<double, true>(const LossArgs<double>&, bool, cudaStream_t);

}  // namespace mcd::kernels::cuda::detail
