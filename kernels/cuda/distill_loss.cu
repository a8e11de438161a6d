// Fused distillation loss: the public launchers, which pick a kernel variant by shape
// (fused_loss_kernel_applies), and the general kernel (CPU twin: kernels/cpu/distill_loss.cpp,
// same arithmetic). The row-per-warp and row-split variants live in distill_loss_row_warp.cu and
// distill_loss_row_split.cu. In the general kernel one thread group owns one (student, row): a
// warp for rows of up to kWarpMaxV logits, a block for longer rows. Rows are ordered row-major
// over (sample, student) so the K students of a sample run side by side and share the teacher
// row through L2. Three passes per row:
//   A  max of z (long rows also copy z to shared memory, so z is read from DRAM once),
//   B  s1 = sum exp(z - max), s2 = sum exp((z - max) / tau) in double,
//   C  teacher terms and dot = sum qT (z - max) in double, and dL/dz (or the JVP dots).
// Each thread revisits the same elements in every pass, so the shared-memory copy needs no
// barrier. Per-row weighted terms go to a workspace and the last block reduces them.
#include <mcd/kernels/cuda/distill_loss.h>

#include <cmath>
#include <limits>
#include <string>

#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

#include "distill_loss_variants.cuh"
#include "row_group.cuh"

namespace mcd::kernels::cuda {
namespace {

using detail::BlockGroup;
using detail::exp_t;
using detail::kGroupScratch;
using detail::kWorkspaceHeader;
using detail::load_pack;
using detail::LossArgs;
using detail::Pack;
using detail::store_pack;
using detail::WarpGroup;

constexpr std::int64_t kWarpMaxV = 1024;
constexpr int kWarpBlockThreads = 256;

struct RowStats {
  double max, s1, s2;
};

// Passes A and B. zc: shared-memory copy of the row, or null to re-read z (L1/L2).
template <class T, int VEC, class G>
__device__ RowStats row_stats(const G& g, const T* __restrict__ z, std::int64_t v, T inv_tau,
                              T* zc) {
  T mx = -std::numeric_limits<T>::infinity();
  for (std::int64_t c = g.rank() * VEC; c < v; c += g.size() * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(z + c);
    if (zc != nullptr) store_pack<T, VEC>(zc + c, p);
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      mx = p.v[e] > mx ? p.v[e] : mx;
  }
  const T m = static_cast<T>(g.max(static_cast<double>(mx)));
  double s[2] = {0.0, 0.0};
  for (std::int64_t c = g.rank() * VEC; c < v; c += g.size() * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(zc != nullptr ? zc + c : z + c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const T d = p.v[e] - m;
      s[0] += static_cast<double>(exp_t(d));
      s[1] += static_cast<double>(exp_t(d * inv_tau));
    }
  }
  g.sum(s);
  return {static_cast<double>(m), s[0], s[1]};
}

template <class T, int VEC, class G>
__device__ void forward_row(const G& g, const LossArgs<T>& a, int s, std::int64_t i, T* zc) {
  const std::int64_t v = a.v, r = s * a.b + i;
  const T* __restrict__ z = a.logits[s] + i * v;
  const T* __restrict__ qt = a.qt != nullptr ? a.qt + i * v : nullptr;
  const T* __restrict__ lqt = a.qt != nullptr ? a.lqt + i * v : nullptr;
  T* __restrict__ grad = a.grad != nullptr ? a.grad + r * v : nullptr;
  const T inv_tau = static_cast<T>(a.inv_tau);
  const RowStats st = row_stats<T, VEC>(g, z, v, inv_tau, zc);
  const T mx = static_cast<T>(st.max);
  const std::int64_t y = a.labels[i];
  const bool y_ok = y >= 0 && y < v;

  const double al = static_cast<double>(a.alpha[r]), be = static_cast<double>(a.beta[r]);
  const T tca = static_cast<T>(al * a.inv_b);
  const T tcb = static_cast<T>(qt != nullptr ? a.tau * be * a.inv_b : 0.0);
  const T ip = static_cast<T>(1.0 / st.s1), iq = static_cast<T>(1.0 / st.s2);
  const bool zero_grad = tca == T(0) && tcb == T(0);

  double t[3] = {0.0, 0.0, 0.0};  // sum qT log qT (qT > 0), sum qT, sum qT (z - max)
  for (std::int64_t c = g.rank() * VEC; c < v; c += g.size() * VEC) {
    const Pack<T, VEC> zp = load_pack<T, VEC>(zc != nullptr ? zc + c : z + c);
    Pack<T, VEC> qp{}, lp{};
    if (qt != nullptr) {
      qp = load_pack<T, VEC>(qt + c);
      lp = load_pack<T, VEC>(lqt + c);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const double q = static_cast<double>(qp.v[e]);
        if (q > 0.0) t[0] += q * static_cast<double>(lp.v[e]);
        t[1] += q;
        t[2] += q * (static_cast<double>(zp.v[e]) - st.max);
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
      if (qt != nullptr) val += tcb * (exp_t(d * inv_tau) * iq - qp.v[e]);
      if (c + e == y) val -= tca;
      gp.v[e] = val;
    }
    store_pack<T, VEC>(grad + c, gp);
  }
  g.sum(t);
  if (g.rank() != 0) return;
  const double ce = y_ok ? (st.max - static_cast<double>(z[y])) + log(st.s1)
                         : std::numeric_limits<double>::quiet_NaN();
  const double kl = qt != nullptr ? t[0] - t[2] * a.inv_tau + log(st.s2) * t[1] : 0.0;
  a.ce[r] = static_cast<T>(ce);
  a.kl[r] = static_cast<T>(kl);
  a.partials[r] = al * ce + (qt != nullptr ? a.tau * a.tau * be * kl : 0.0);
}

template <class T, int VEC, class G>
__device__ void jvp_row(const G& g, const LossArgs<T>& a, int s, std::int64_t i, T* zc) {
  const std::int64_t v = a.v, r = s * a.b + i;
  double d[2] = {0.0, 0.0};  // sum e1 zt, sum (q - qT) zt
  double s1 = 1.0;
  std::int64_t y = 0;
  bool y_ok = true;
  const T* __restrict__ zt = a.tangents[s] != nullptr ? a.tangents[s] + i * v : nullptr;
  if (zt != nullptr) {  // uniform across the group
    const T* __restrict__ z = a.logits[s] + i * v;
    const T* __restrict__ qt = a.qt != nullptr ? a.qt + i * v : nullptr;
    const T inv_tau = static_cast<T>(a.inv_tau);
    const RowStats st = row_stats<T, VEC>(g, z, v, inv_tau, zc);
    const T mx = static_cast<T>(st.max);
    const double iq = 1.0 / st.s2;
    for (std::int64_t c = g.rank() * VEC; c < v; c += g.size() * VEC) {
      const Pack<T, VEC> zp = load_pack<T, VEC>(zc != nullptr ? zc + c : z + c);
      const Pack<T, VEC> tp = load_pack<T, VEC>(zt + c);
      Pack<T, VEC> qp{};
      if (qt != nullptr) qp = load_pack<T, VEC>(qt + c);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const T dz = zp.v[e] - mx;
        const double tv = static_cast<double>(tp.v[e]);
        d[0] += static_cast<double>(exp_t(dz)) * tv;
        if (qt != nullptr)
          d[1] +=
              (static_cast<double>(exp_t(dz * inv_tau)) * iq - static_cast<double>(qp.v[e])) * tv;
      }
    }
    g.sum(d);
    s1 = st.s1;
    y = a.labels[i];
    y_ok = y >= 0 && y < v;
  }
  if (g.rank() != 0) return;
  double ce_t = 0.0, kl_t = 0.0;
  if (zt != nullptr) {
    ce_t = y_ok ? d[0] / s1 - static_cast<double>(zt[y]) : std::numeric_limits<double>::quiet_NaN();
    kl_t = d[1] * a.inv_tau;
  }
  a.ce[r] = static_cast<T>(ce_t);
  a.kl[r] = static_cast<T>(kl_t);
  a.partials[r] = static_cast<double>(a.alpha[r]) * ce_t +
                  (a.qt != nullptr ? a.tau * a.tau * static_cast<double>(a.beta[r]) * kl_t : 0.0);
}

// BLOCK: one block per row (blockIdx.x), else one warp per row. Row r = i * K + s.
template <class T, int VEC, bool BLOCK, bool JVP>
__global__ void __launch_bounds__(BLOCK ? 1024 : kWarpBlockThreads)
    distill_loss_kernel(const LossArgs<T> a) {
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  __shared__ double scratch[kGroupScratch];
  const std::int64_t rows = a.k * a.b;
  if constexpr (BLOCK) {
    const std::int64_t row = blockIdx.x;
    const BlockGroup g{scratch};
    T* zc = a.cache_z ? reinterpret_cast<T*>(dynamic_smem) : nullptr;
    if constexpr (JVP)
      jvp_row<T, VEC>(g, a, static_cast<int>(row % a.k), row / a.k, zc);
    else
      forward_row<T, VEC>(g, a, static_cast<int>(row % a.k), row / a.k, zc);
  } else {
    const std::int64_t row =
        static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row < rows) {
      if constexpr (JVP)
        jvp_row<T, VEC>(WarpGroup{}, a, static_cast<int>(row % a.k), row / a.k, nullptr);
      else
        forward_row<T, VEC>(WarpGroup{}, a, static_cast<int>(row % a.k), row / a.k, nullptr);
    }
  }
  detail::last_block_mean(a.counter, a.partials, a.k, a.b, a.loss, scratch);
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// Picks the warp or block path and 16-byte packs where every row start is aligned.
template <class T, bool JVP>
void launch_general(LossArgs<T>& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  bool vec = a.v % kVec == 0 && aligned16(a.qt) && aligned16(a.lqt) && aligned16(a.grad);
  for (int s = 0; s < a.k; ++s)
    vec = vec && aligned16(a.logits[s]) && aligned16(a.tangents[s]);
  const std::int64_t rows = a.k * a.b;
  if (a.v <= kWarpMaxV) {
    a.cache_z = false;
    const int warps = kWarpBlockThreads / 32;
    const dim3 grid(static_cast<unsigned>((rows + warps - 1) / warps));
    if (vec)
      distill_loss_kernel<T, kVec, false, JVP><<<grid, kWarpBlockThreads, 0, stream>>>(a);
    else
      distill_loss_kernel<T, 1, false, JVP><<<grid, kWarpBlockThreads, 0, stream>>>(a);
    MCD_CUDA_CHECK_LAUNCH("distill_loss_kernel (warp per row)");
    return;
  }
  MCD_CUDA_REQUIRE(rows <= std::numeric_limits<int>::max(),
                   "distill_loss (CUDA): " + std::to_string(rows) + " rows exceed the grid limit");
  const int threads = a.v >= 16384 ? 1024 : a.v >= 4096 ? 512 : 256;
  const std::size_t row_bytes = static_cast<std::size_t>(a.v) * sizeof(T);
  const auto kernel =
      vec ? distill_loss_kernel<T, kVec, true, JVP> : distill_loss_kernel<T, 1, true, JVP>;
  // The row is cached in shared memory when it fits beside the kernel's own static shared memory
  // (as compiled); otherwise every pass reads it again from global memory.
  cudaFuncAttributes fa{};
  MCD_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  a.cache_z = row_bytes + fa.sharedSizeBytes <= max_shared_memory_per_block(current_device());
  const std::size_t smem = a.cache_z ? row_bytes : 0;
  if (smem > 0) allow_dynamic_shared_memory(kernel, smem);
  kernel<<<static_cast<unsigned>(rows), threads, smem, stream>>>(a);
  MCD_CUDA_CHECK_LAUNCH("distill_loss_kernel (block per row)");
}

// Launches `kernel`, or the variant automatic picks for this shape; a forced variant that does
// not apply is an error that names it.
template <class T, bool JVP>
void launch(const char* op, FusedLossKernel kernel, LossArgs<T>& a, cudaStream_t stream) {
  if (kernel == FusedLossKernel::automatic) kernel = fused_loss_automatic_kernel(a.v, sizeof(T));
  MCD_CUDA_REQUIRE(fused_loss_kernel_applies(kernel, a.v, sizeof(T)),
                   std::string(op) + ": the " + fused_loss_kernel_name(kernel) +
                       " kernel does not take rows of " + std::to_string(a.v) + " " +
                       (sizeof(T) == 4 ? "float32" : "float64") + " values on this device");
  switch (kernel) {
    case FusedLossKernel::row_per_warp:
      detail::launch_row_warp<T, JVP>(a, stream);
      return;
    case FusedLossKernel::row_split:
      detail::launch_row_split<T, JVP>(a, false, stream);
      return;
    case FusedLossKernel::row_split_log_prob:  // the JVP reads no log-probabilities anyway
      detail::launch_row_split<T, JVP>(a, !JVP, stream);
      return;
    case FusedLossKernel::automatic:
    case FusedLossKernel::general:
      launch_general<T, JVP>(a, stream);
      return;
  }
}

template <class T>
LossArgs<T> common_args(const char* op, std::int64_t k, std::int64_t b, std::int64_t v,
                        const T* const* logits, const std::int64_t* labels, const T* alpha,
                        const T* beta, double tau, void* workspace) {
  const std::string where = std::string(op) + ": ";
  MCD_CUDA_REQUIRE(k >= 1 && k <= kMaxDistillStudents,
                   where + std::to_string(k) + " students (expected 1.." +
                       std::to_string(kMaxDistillStudents) + ")");
  MCD_CUDA_REQUIRE(b >= 1 && v >= 1, where + "empty logits (B = " + std::to_string(b) +
                                         ", V = " + std::to_string(v) + ")");
  MCD_CUDA_REQUIRE(std::isfinite(tau) && tau > 0,
                   where + "temperature " + std::to_string(tau) + " (expected > 0)");
  MCD_CUDA_REQUIRE(workspace != nullptr && labels != nullptr && alpha != nullptr && beta != nullptr,
                   where + "null workspace, labels or weights");
  LossArgs<T> a{};
  for (std::int64_t s = 0; s < k; ++s) {
    MCD_CUDA_REQUIRE(logits[s] != nullptr, where + "null logits for student " + std::to_string(s));
    a.logits[s] = logits[s];
  }
  a.labels = labels;
  a.alpha = alpha;
  a.beta = beta;
  a.counter = static_cast<unsigned*>(workspace);
  a.partials = reinterpret_cast<double*>(static_cast<char*>(workspace) + kWorkspaceHeader);
  a.k = static_cast<int>(k);
  a.b = b;
  a.v = v;
  a.tau = tau;
  a.inv_tau = 1.0 / tau;
  a.inv_b = 1.0 / static_cast<double>(b);
  return a;
}

}  // namespace

std::size_t distill_loss_workspace_bytes(std::int64_t k, std::int64_t b) {
  return kWorkspaceHeader + static_cast<std::size_t>(k * b) * sizeof(double);
}

const char* fused_loss_kernel_name(FusedLossKernel kernel) {
  switch (kernel) {
    case FusedLossKernel::automatic:
      return "automatic";
    case FusedLossKernel::general:
      return "general";
    case FusedLossKernel::row_per_warp:
      return "row_per_warp";
    case FusedLossKernel::row_split:
      return "row_split";
    case FusedLossKernel::row_split_log_prob:
      return "row_split_log_prob";
  }
  return "unknown";
}

bool fused_loss_kernel_applies(FusedLossKernel kernel, std::int64_t v, std::size_t elem_bytes) {
  switch (kernel) {
    case FusedLossKernel::automatic:
    case FusedLossKernel::general:
      return true;
    case FusedLossKernel::row_per_warp:
      return detail::row_warp_applies(v, elem_bytes);
    case FusedLossKernel::row_split:
    case FusedLossKernel::row_split_log_prob:
      return detail::row_split_applies(v, elem_bytes);
  }
  return false;
}

FusedLossKernel fused_loss_automatic_kernel(std::int64_t v, std::size_t elem_bytes) {
  if (detail::row_warp_applies(v, elem_bytes)) return FusedLossKernel::row_per_warp;
  if (detail::row_split_applies(v, elem_bytes)) return FusedLossKernel::row_split;
  return FusedLossKernel::general;
}

template <class T>
void distill_loss_forward_cuda(std::int64_t k, std::int64_t b, std::int64_t v,
                               const T* const* logits, const T* teacher_prob,
                               const T* teacher_log_prob, const std::int64_t* labels,
                               const T* alpha, const T* beta, double tau, T* ce, T* kl, T* loss,
                               T* grad_logits, void* workspace, cudaStream_t stream,
                               FusedLossKernel kernel) {
  const char* op = "distill_loss_forward_cuda";
  LossArgs<T> a = common_args(op, k, b, v, logits, labels, alpha, beta, tau, workspace);
  MCD_CUDA_REQUIRE(ce != nullptr && kl != nullptr && loss != nullptr,
                   std::string(op) + ": null output");
  const bool has_teacher = teacher_prob != nullptr && teacher_log_prob != nullptr;
  a.qt = has_teacher ? teacher_prob : nullptr;
  a.lqt = has_teacher ? teacher_log_prob : nullptr;
  a.ce = ce;
  a.kl = kl;
  a.loss = loss;
  a.grad = grad_logits;
  launch<T, false>(op, kernel, a, stream);
}

template <class T>
void distill_loss_jvp_cuda(std::int64_t k, std::int64_t b, std::int64_t v, const T* const* logits,
                           const T* const* logits_t, const T* teacher_prob,
                           const std::int64_t* labels, const T* alpha, const T* beta, double tau,
                           T* ce_t, T* kl_t, T* loss_t, void* workspace, cudaStream_t stream,
                           FusedLossKernel kernel) {
  const char* op = "distill_loss_jvp_cuda";
  LossArgs<T> a = common_args(op, k, b, v, logits, labels, alpha, beta, tau, workspace);
  MCD_CUDA_REQUIRE(ce_t != nullptr && kl_t != nullptr && loss_t != nullptr,
                   std::string(op) + ": null output");
  for (std::int64_t s = 0; s < k; ++s)
    a.tangents[s] = logits_t[s];
  a.qt = teacher_prob;
  a.ce = ce_t;
  a.kl = kl_t;
  a.loss = loss_t;
  launch<T, true>(op, kernel, a, stream);
}

#define MCD_INSTANTIATE_DISTILL_LOSS_CUDA(T)                                                      \
  template void distill_loss_forward_cuda<T>(std::int64_t, std::int64_t, std::int64_t,            \
                                             const T* const*, const T*, const T*,                 \
                                             const std::int64_t*, const T*, const T*, double, T*, \
                                             T*, T*, T*, void*, cudaStream_t, FusedLossKernel);   \
  template void distill_loss_jvp_cuda<T>(std::int64_t, std::int64_t, std::int64_t,                \
                                         const T* const*, const T* const*, const T*,              \
                                         const std::int64_t*, const T*, const T*, double, T*, T*, \
                                         T*, void*, cudaStream_t, FusedLossKernel);
MCD_INSTANTIATE_DISTILL_LOSS_CUDA(float)
MCD_INSTANTIATE_DISTILL_LOSS_CUDA(double)
#undef MCD_INSTANTIATE_DISTILL_LOSS_CUDA

}  // namespace mcd::kernels::cuda
