// The fused loss for short rows (V <= 1024 in float32, 256 in float64) in one pass: one warp per
// (sample, student), the K warps of a sample in one block, every lane holding its V / 32 logits
// (and teacher probabilities) in registers. All loads of a row are issued at once, so a row
// costs one memory round trip; the teacher's terms (sum qT log qT, sum qT) are computed once
// per sample, by the sample's first warp, and shared through shared memory. Blocks stride over
// the samples; each sums its weighted terms per student in a fixed order, and the last block to
// finish adds the blocks' sums in block order, so the losses are deterministic and need no
// second launch.
#include <algorithm>
#include <limits>
#include <string>

#include <mcd/kernels/cuda/check.h>

#include "distill_loss_variants.cuh"

namespace mcd::kernels::cuda::detail {
namespace {

inline constexpr int kMaxWarps = 16;              // K <= 16 students, samples * K <= max(K, 8)
inline constexpr int kMaxSamples = 8;             // samples per block
inline constexpr std::int64_t kMaxBlocks = 1024;  // bounds the last block's work

static_assert(kMaxDistillStudents <= kMaxWarps, "one warp per student of a sample");

// Blocks stride over groups of `samples` samples; warp w handles sample w / K of the group and
// student w % K. Every warp of a block runs the same number of iterations, so the barriers
// inside the loop are reached by all threads.
struct Layout {
  int samples, warp, lane, sample, student;
  std::int64_t groups;
  __device__ Layout(int k, std::int64_t b)
      : samples(static_cast<int>(blockDim.x / 32) / k),
        warp(static_cast<int>(threadIdx.x / 32)),
        lane(static_cast<int>(threadIdx.x % 32)),
        sample(warp / k),
        student(warp % k),
        groups((b + samples - 1) / samples) {}
};

// The block's per-student sums of its warps' terms (lane 0 of each warp holds one), in warp
// order, to partials[s * gridDim.x + blockIdx.x]; then the last block to finish writes
// out[s] = (sum over blocks) / B and resets the counter. There, the `samples` warps of student s
// take every samples-th stretch of 32 blocks, and their sums are added in warp order: a fixed
// order for a given grid, which depends on the shape only.
template <class T>
__device__ void finish_block(const LossArgs<T>& a, const Layout& l, double warp_term) {
  __shared__ double terms[kMaxWarps];
  __shared__ bool is_last;
  const int k = a.k;
  const std::int64_t nb = gridDim.x;
  if (l.lane == 0) terms[l.warp] = warp_term;
  __syncthreads();
  if (threadIdx.x < static_cast<unsigned>(k)) {
    double acc = 0.0;
    for (int j = 0; j < l.samples; ++j)
      acc += terms[j * k + threadIdx.x];
    a.partials[threadIdx.x * nb + blockIdx.x] = acc;
  }
  __threadfence();  // this block's sums are visible to whichever block finishes last
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(a.counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const double* part = a.partials + l.student * nb;
  double acc[1] = {0.0};
  // Unrolled so that a few hundred blocks' sums arrive in one round of L2 loads.
#pragma unroll 16
  for (std::int64_t blk = l.sample * 32 + l.lane; blk < nb; blk += 32 * l.samples)
    acc[0] += __ldcg(part + blk);  // L2: never a stale L1 line
  warp_sum(acc);
  if (l.lane == 0) terms[l.warp] = acc[0];  // last read before the ticket's barriers
  __syncthreads();
  if (threadIdx.x < static_cast<unsigned>(k)) {
    double total = 0.0;
    for (int j = 0; j < l.samples; ++j)
      total += terms[j * k + threadIdx.x];
    a.loss[threadIdx.x] = static_cast<T>(total * a.inv_b);
  }
  if (threadIdx.x == 0) *a.counter = 0u;
}

// N: elements per lane (lane l holds c = e * 32 + l, e < N); elements past V read as -inf
// logits and zero probabilities and are never written.
template <class T, int N>
__global__ void __launch_bounds__(kMaxWarps * 32)
    distill_loss_row_warp_forward_kernel(const LossArgs<T> a) {
  // Teacher terms per sample slot, double-buffered by iteration: a slot is rewritten two
  // iterations later, after every warp has passed the barrier between.
  __shared__ double teacher_terms[2][kMaxSamples][2];
  const Layout l(a.k, a.b);
  const std::int64_t v = a.v;
  const bool teacher = a.qt != nullptr;
  const T inv_tau = static_cast<T>(a.inv_tau);
  double warp_term = 0.0;  // this warp's weighted terms, summed in sample order
  int parity = 0;
  for (std::int64_t grp = blockIdx.x; grp < l.groups; grp += gridDim.x, parity ^= 1) {
    const std::int64_t i = grp * l.samples + l.sample;
    const std::int64_t r = l.student * a.b + i;
    const bool valid = i < a.b;  // uniform across the warp
    double ce = 0.0, dot = 0.0, log_s2 = 0.0, al = 0.0, be = 0.0;
    if (valid) {
      const T* __restrict__ z = a.logits[l.student] + i * v;
      // Every load of the row is issued here, none behind a test on another's value, so the
      // row costs one memory round trip.
      const bool teacher_warp = teacher && l.student == 0;
      T zr[N], qr[N], lr[N];
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const std::int64_t c = e * 32 + l.lane;
        zr[e] = c < v ? z[c] : -std::numeric_limits<T>::infinity();
        qr[e] = teacher && c < v ? a.qt[i * v + c] : T(0);
        lr[e] = teacher_warp && c < v ? a.lqt[i * v + c] : T(0);
      }
      double acc[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};  // s1, s2, sum qT (z - max), z[y], t0, t1
      if (teacher_warp) {
#pragma unroll
        for (int e = 0; e < N; ++e) {
          const double q = static_cast<double>(qr[e]);  // 0 past V
          if (q > 0.0) acc[4] += q * static_cast<double>(lr[e]);
          acc[5] += q;
        }
      }
      const std::int64_t y = a.labels[i];
      al = static_cast<double>(a.alpha[r]);
      be = static_cast<double>(a.beta[r]);
      T mx = -std::numeric_limits<T>::infinity();
#pragma unroll
      for (int e = 0; e < N; ++e)
        mx = zr[e] > mx ? zr[e] : mx;
      mx = warp_max_t(mx);
      const double mxd = static_cast<double>(mx);
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const std::int64_t c = e * 32 + l.lane;
        if (c >= v) continue;
        const T d = zr[e] - mx;
        acc[0] += static_cast<double>(exp_t(d));
        acc[1] += static_cast<double>(exp_t(d * inv_tau));
        if (teacher) acc[2] += static_cast<double>(qr[e]) * (static_cast<double>(zr[e]) - mxd);
        if (c == y) acc[3] = static_cast<double>(zr[e]);  // one lane: the others add 0
      }
      warp_sum(acc);
      if (a.grad != nullptr) {
        T* __restrict__ g = a.grad + r * v;
        const T tca = static_cast<T>(al * a.inv_b);
        const T tcb = static_cast<T>(teacher ? a.tau * be * a.inv_b : 0.0);
        const T ip = static_cast<T>(1.0 / acc[0]), iq = static_cast<T>(1.0 / acc[1]);
        const bool zero_grad = tca == T(0) && tcb == T(0);
#pragma unroll
        for (int e = 0; e < N; ++e) {
          const std::int64_t c = e * 32 + l.lane;
          if (c >= v) continue;
          T val = T(0);
          if (!zero_grad) {
            const T d = zr[e] - mx;
            val = tca * (exp_t(d) * ip);
            if (teacher) val += tcb * (exp_t(d * inv_tau) * iq - qr[e]);
            if (c == y) val -= tca;
          }
          g[c] = val;
        }
      }
      ce =
          y >= 0 && y < v ? (mxd - acc[3]) + log(acc[0]) : std::numeric_limits<double>::quiet_NaN();
      dot = acc[2];
      log_s2 = log(acc[1]);
      if (teacher_warp && l.lane == 0) {
        teacher_terms[parity][l.sample][0] = acc[4];
        teacher_terms[parity][l.sample][1] = acc[5];
      }
    }
    if (teacher) __syncthreads();  // uniform: the sample's teacher terms are in shared memory
    if (valid && l.lane == 0) {
      double kl = 0.0;
      if (teacher) {
        const double t0 = teacher_terms[parity][l.sample][0];
        const double t1 = teacher_terms[parity][l.sample][1];
        kl = t0 - dot * a.inv_tau + log_s2 * t1;
      }
      a.ce[r] = static_cast<T>(ce);
      a.kl[r] = static_cast<T>(kl);
      warp_term += al * ce + (teacher ? a.tau * a.tau * be * kl : 0.0);
    }
  }
  finish_block(a, l, warp_term);
}

template <class T, int N>
__global__ void __launch_bounds__(kMaxWarps * 32)
    distill_loss_row_warp_jvp_kernel(const LossArgs<T> a) {
  const Layout l(a.k, a.b);
  const std::int64_t v = a.v;
  const bool teacher = a.qt != nullptr;
  const T inv_tau = static_cast<T>(a.inv_tau);
  const T* const tangents = a.tangents[l.student];
  double warp_term = 0.0;
  for (std::int64_t grp = blockIdx.x; grp < l.groups; grp += gridDim.x) {
    const std::int64_t i = grp * l.samples + l.sample;
    if (i >= a.b) continue;  // uniform across the warp; no barrier in this loop
    const std::int64_t r = l.student * a.b + i;
    double ce_t = 0.0, kl_t = 0.0;
    if (tangents != nullptr) {
      const T* __restrict__ z = a.logits[l.student] + i * v;
      const T* __restrict__ zt = tangents + i * v;
      T zr[N], tr[N], qr[N];
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const std::int64_t c = e * 32 + l.lane;
        zr[e] = c < v ? z[c] : -std::numeric_limits<T>::infinity();
        tr[e] = c < v ? zt[c] : T(0);
        qr[e] = teacher && c < v ? a.qt[i * v + c] : T(0);
      }
      const std::int64_t y = a.labels[i];
      T mx = -std::numeric_limits<T>::infinity();
#pragma unroll
      for (int e = 0; e < N; ++e)
        mx = zr[e] > mx ? zr[e] : mx;
      mx = warp_max_t(mx);
      double s[2] = {0.0, 0.0};
#pragma unroll
      for (int e = 0; e < N; ++e) {
        if (e * 32 + l.lane >= v) continue;
        const T d = zr[e] - mx;
        s[0] += static_cast<double>(exp_t(d));
        s[1] += static_cast<double>(exp_t(d * inv_tau));
      }
      warp_sum(s);
      const double iq = 1.0 / s[1];
      double d[3] = {0.0, 0.0, 0.0};  // sum e1 zt, sum (q - qT) zt, zt[y]
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const std::int64_t c = e * 32 + l.lane;
        if (c >= v) continue;
        const T dz = zr[e] - mx;
        const double tv = static_cast<double>(tr[e]);
        d[0] += static_cast<double>(exp_t(dz)) * tv;
        if (teacher)
          d[1] += (static_cast<double>(exp_t(dz * inv_tau)) * iq - static_cast<double>(qr[e])) * tv;
        if (c == y) d[2] = tv;
      }
      warp_sum(d);
      ce_t = y >= 0 && y < v ? d[0] / s[0] - d[2] : std::numeric_limits<double>::quiet_NaN();
      kl_t = d[1] * a.inv_tau;
    }
    if (l.lane == 0) {
      a.ce[r] = static_cast<T>(ce_t);
      a.kl[r] = static_cast<T>(kl_t);
      warp_term += static_cast<double>(a.alpha[r]) * ce_t +
                   (teacher ? a.tau * a.tau * static_cast<double>(a.beta[r]) * kl_t : 0.0);
    }
  }
  finish_block(a, l, warp_term);
}

template <class T, int N, bool JVP>
void run(const LossArgs<T>& a, dim3 grid, dim3 block, cudaStream_t stream) {
  if constexpr (JVP)
    distill_loss_row_warp_jvp_kernel<T, N><<<grid, block, 0, stream>>>(a);
  else
    distill_loss_row_warp_forward_kernel<T, N><<<grid, block, 0, stream>>>(a);
  MCD_CUDA_CHECK_LAUNCH("distill_loss_row_warp_kernel");
}

}  // namespace

bool row_warp_applies(std::int64_t v, std::size_t elem_bytes) {
  return v >= 1 && v <= (elem_bytes == 4 ? kRowWarpMaxV32 : kRowWarpMaxV64);
}

template <class T, bool JVP>
void launch_row_warp(const LossArgs<T>& a, cudaStream_t stream) {
  MCD_CUDA_REQUIRE(row_warp_applies(a.v, sizeof(T)),
                   "distill_loss (CUDA): row_per_warp takes rows of at most " +
                       std::to_string(sizeof(T) == 4 ? kRowWarpMaxV32 : kRowWarpMaxV64) +
                       " elements, got " + std::to_string(a.v));
  // Eight warps per block where K allows (fewer samples than that only for tiny batches).
  const std::int64_t samples = std::min<std::int64_t>(std::max(1, kMaxSamples / a.k), a.b);
  const std::int64_t groups = (a.b + samples - 1) / samples;
  const dim3 grid(static_cast<unsigned>(std::min(groups, kMaxBlocks)));
  const dim3 block(static_cast<unsigned>(32 * samples * a.k));
  if (a.v <= 128) {
    run<T, 4, JVP>(a, grid, block, stream);
  } else if (a.v <= 256) {
    run<T, 8, JVP>(a, grid, block, stream);
  } else if constexpr (sizeof(T) == 4) {
    if (a.v <= 512)
      run<T, 16, JVP>(a, grid, block, stream);
    else
      run<T, 32, JVP>(a, grid, block, stream);
  }
}

template void launch_row_warp<float, false>(const LossArgs<float>&, cudaStream_t);
template void launch_row_warp<float, true>(const LossArgs<float>&, cudaStream_t);
template void launch_row_warp<double, false>(const LossArgs<double>&, cudaStream_t);
template void launch_row_warp<double, true>(const LossArgs<double>&, cudaStream_t);

}  // namespace mcd::kernels::cuda::detail
