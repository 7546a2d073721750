// Fused CPU kernel of SimAM (Yang et al., ICML 2021) for PaddlePaddle custom operators.
//
// For x of shape [B, C, H, W], per channel (N = H*W positions, n = max(N - 1, 1)):
//   mu = mean(x),  var = sum((x - mu)^2) / n,  k = 1 / (4 * (var + lambda))
//   e  = (x - mu)^2 * k + 0.5,  s = sigmoid(e),  y = x * s
// H*W == 1 gives var = 0, e = 0.5 (the limit documented in simam.py).
//
// The forward op returns y and the per-channel statistics mu and k; the backward op reads
// only x, mu, k and dL/dy, so a training step keeps no full-size intermediate.
// With d = x - mu, a_i = g_i * x_i * s_i * (1 - s_i), S1 = sum(a * d), S2 = sum(a * d^2):
//   dL/dx_i = g_i * s_i + 2k * (a_i * d_i - S1 / N) - (8 k^2 / n) * S2 * d_i
// Each channel is processed while it sits in cache (sums in double); channels may be split
// across OpenMP threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "paddle/extension.h"

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__)
// One build serves any x86-64 CPU: the loops are compiled for AVX-512, AVX2 and the baseline,
// and the best one is picked when the library loads (GCC 12+ on Linux; elsewhere the baseline).
#define SIMAM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMAM_MULTIVERSION
#endif

namespace {

// exp(-e) for e >= 0 (here e >= 0.5). In float: e is clamped to 87 (exp(-87) ~ 1.6e-38, still
// normal; 1 + exp(-e) rounds to 1 long before), then -e = m*ln2 + r with |r| <= ln2/2 and a
// degree-7 Taylor polynomial for exp(r) (truncation error below 1e-8 relative, under float's
// rounding). The clamp is done on the bit pattern (positive floats order like their bits) and
// every step is branch-free, so that the loops calling it vectorise on every instruction set.
inline float exp_minus(float e) {
  int32_t e_bits;
  std::memcpy(&e_bits, &e, sizeof(e_bits));
  const int32_t max_bits = 0x42ae0000;  // 87.0f
  e_bits = e_bits < max_bits ? e_bits : max_bits;
  std::memcpy(&e, &e_bits, sizeof(e));
  const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float m = (e * -1.44269504088896341f + round_magic) - round_magic;
  // ln2 split in a part exact in float (few mantissa bits) and the remainder
  float r = -e - m * 0.693359375f;
  r = r + m * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;  // Taylor coefficients 1/i!, Horner's scheme
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t scale_bits = (static_cast<int32_t>(m) + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  return p * scale;
}

inline double exp_minus(double e) { return std::exp(-e); }

// Sum of the 16 partial sums, pairwise (a 16-long chain of dependent adds costs more than a
// short channel).
inline double pairwise_sum16(double* acc) {
  for (int width = 8; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// Sum of x[0..N) in double: 16 partial sums (no dependency chain through every add), then
// pairwise.
template <typename T>
inline __attribute__((always_inline)) double sum_double(const T* x, int64_t N) {
  double acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= N; i += 16) {
#pragma omp simd
    for (int j = 0; j < 16; ++j) acc[j] += static_cast<double>(x[i + j]);
  }
  double total = pairwise_sum16(acc);
  for (; i < N; ++i) total += static_cast<double>(x[i]);
  return total;
}

// The sizes of one channel: N = H*W values, n = max(N - 1, 1), and `spilled` = N rounded up to
// a multiple of 16. The element-wise loops of a channel run over `spilled` values when the
// channels after it in the same thread's range hold the spill (they overwrite it later): a whole
// number of vectors leaves no scalar remainder, which on 7x7 maps costs more than the spill.
struct ChannelSize {
  explicit ChannelSize(int64_t positions)
      : N(positions),
        spilled((positions + 15) / 16 * 16),
        inv_N(1.0 / static_cast<double>(positions)),
        inv_n(1.0 / static_cast<double>(std::max<int64_t>(positions - 1, 1))) {}
  // Whether channel c may spill: the channels after it in [c, end) must hold the spill.
  bool spill_fits(int64_t c, int64_t end) const { return spilled <= (end - c) * N; }
  int64_t N, spilled;
  double inv_N, inv_n;
};

// Channels [begin, end): statistics of each, then its output while it is still in cache.
template <typename T>
inline __attribute__((always_inline)) void forward_range_impl(const T* x, T* y, T* mean, T* k_out, int64_t begin,
                                                              int64_t end, const ChannelSize& size,
                                                              double lambda) {
  const int64_t N = size.N;
  for (int64_t c = begin; c < end; ++c) {
    const T* xc = x + c * N;
    T* yc = y + c * N;
    // Both sums in one pass, in double, shifted by the first value so that the variance does
    // not come from the difference of two large numbers.
    const double x0 = static_cast<double>(xc[0]);
    double acc1[16] = {0}, acc2[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= N; i += 16) {
#pragma omp simd
      for (int j = 0; j < 16; ++j) {
        const double d = static_cast<double>(xc[i + j]) - x0;
        acc1[j] += d;
        acc2[j] += d * d;
      }
    }
    double s1 = pairwise_sum16(acc1), s2 = pairwise_sum16(acc2);
    for (; i < N; ++i) {
      const double d = static_cast<double>(xc[i]) - x0;
      s1 += d;
      s2 += d * d;
    }
    if (!std::isfinite(s1) || !std::isfinite(s2)) {  // an inf or NaN makes the formula NaN channel-wide
      const T nan = std::numeric_limits<T>::quiet_NaN();
      std::fill(yc, yc + N, nan);
      mean[c] = k_out[c] = nan;
      continue;
    }
    const double ss = std::max(s2 - s1 * s1 * size.inv_N, 0.0);
    const T mu = static_cast<T>(x0 + s1 * size.inv_N);
    const T k = static_cast<T>(0.25 / (ss * size.inv_n + lambda));
    mean[c] = mu;
    k_out[c] = k;
    const int64_t len = size.spill_fits(c, end) ? size.spilled : N;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const T d = xc[i] - mu;
      const T e = d * (d * k) + static_cast<T>(0.5);  // (d * k) first: d * d overflows float sooner
      yc[i] = xc[i] / (static_cast<T>(1) + exp_minus(e));
    }
  }
}

// The gradient of channels [begin, end). Scratch holds four buffers of `spilled` values: s, a and
// the terms of the two sums, taken over w = d * k rather than d (S1 = sum(a w) = k sum(a d),
// S2 = sum(a w^2) = k^2 sum(a d^2)) so that no intermediate overflows float for large inputs:
//   dL/dx = g s + 2 a w - (8 S2 / n) d - 2 S1 / N
template <typename T>
inline __attribute__((always_inline)) void backward_range_impl(const T* x, const T* mean, const T* k_in, const T* g,
                                                               T* dx, int64_t begin, int64_t end,
                                                               const ChannelSize& size, T* scratch) {
  const int64_t N = size.N;
  T* s = scratch;
  T* a = s + size.spilled;
  T* aw = a + size.spilled;
  T* aww = aw + size.spilled;
  for (int64_t c = begin; c < end; ++c) {
    const T* xc = x + c * N;
    const T* gc = g + c * N;
    T* dxc = dx + c * N;
    const T mu = mean[c], k = k_in[c];
    const int64_t len = size.spill_fits(c, end) ? size.spilled : N;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const T d = xc[i] - mu;
      const T w = d * k;
      const T q = exp_minus(d * w + static_cast<T>(0.5));
      const T si = static_cast<T>(1) / (static_cast<T>(1) + q);
      const T ai = gc[i] * xc[i] * si * (q * si);  // 1 - s = q * s, accurate where s is near 1
      s[i] = si;
      a[i] = ai;
      aw[i] = ai * w;
      aww[i] = ai * w * w;
    }
    const T c1 = static_cast<T>(2.0 * sum_double(aw, N) * size.inv_N);
    const T c2 = static_cast<T>(8.0 * sum_double(aww, N) * size.inv_n);
    const T two_k = static_cast<T>(2) * k;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const T d = xc[i] - mu;
      dxc[i] = gc[i] * s[i] + (two_k * a[i] - c2) * d - c1;
    }
  }
}

// The entry points are compiled once per instruction set (see SIMAM_MULTIVERSION).
SIMAM_MULTIVERSION void forward_range(const float* x, float* y, float* mean, float* k, int64_t begin, int64_t end,
                                      const ChannelSize& size, double lambda) {
  forward_range_impl<float>(x, y, mean, k, begin, end, size, lambda);
}
SIMAM_MULTIVERSION void forward_range(const double* x, double* y, double* mean, double* k, int64_t begin,
                                      int64_t end, const ChannelSize& size, double lambda) {
  forward_range_impl<double>(x, y, mean, k, begin, end, size, lambda);
}
SIMAM_MULTIVERSION void backward_range(const float* x, const float* mean, const float* k, const float* g, float* dx,
                                       int64_t begin, int64_t end, const ChannelSize& size, float* scratch) {
  backward_range_impl<float>(x, mean, k, g, dx, begin, end, size, scratch);
}
SIMAM_MULTIVERSION void backward_range(const double* x, const double* mean, const double* k, const double* g,
                                       double* dx, int64_t begin, int64_t end, const ChannelSize& size,
                                       double* scratch) {
  backward_range_impl<double>(x, mean, k, g, dx, begin, end, size, scratch);
}

// Threads: as many as the caller asks for (1 unless SIMAM_PADDLE_NUM_THREADS says otherwise, see
// simam_kernel.py): on a shared machine, OpenMP threads that wait at a barrier for a descheduled
// sibling cost far more than they save. Small tensors stay on one thread anyway.
constexpr int64_t kParallelMinElements = 32768;

// Runs body(begin, end) on one contiguous range of channels per thread.
template <typename Body>
void split_channels(int64_t channels, int64_t N, int num_threads, const Body& body) {
  const int team = channels * N >= kParallelMinElements ? std::max(num_threads, 1) : 1;
#pragma omp parallel num_threads(team) if (team > 1)
  {
#ifdef _OPENMP
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
#else
    const int64_t parts = 1, part = 0;
#endif
    body(channels * part / parts, channels * (part + 1) / parts);
  }
}

template <typename T>
void forward_channels(const T* x, T* y, T* mean, T* k, int64_t channels, int64_t N, double lambda,
                      int num_threads) {
  const ChannelSize size(N);
  split_channels(channels, N, num_threads,
                 [&](int64_t begin, int64_t end) { forward_range(x, y, mean, k, begin, end, size, lambda); });
}

template <typename T>
void backward_channels(const T* x, const T* mean, const T* k, const T* g, T* dx, int64_t channels, int64_t N,
                       int num_threads) {
  const ChannelSize size(N);
  split_channels(channels, N, num_threads, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(4 * static_cast<size_t>(size.spilled));
    backward_range(x, mean, k, g, dx, begin, end, size, scratch.data());
  });
}

// A fresh output buffer costs a page fault per 4 KiB on first write: for a [128, 48, 32, 32]
// float32 tensor that takes longer than the arithmetic. Where Linux offers transparent huge pages
// on request, ask for them on the 2 MiB-aligned inside of large outputs: one fault per 2 MiB.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only
#else
  (void)data;
  (void)bytes;
#endif
}

void check_input(const paddle::Tensor& x) {
  PD_CHECK(x.is_cpu(), "simam_fused: the kernel runs on CPU tensors only");
  PD_CHECK(x.shape().size() == 4, "simam_fused: expected a 4-D [B, C, H, W] tensor");
}

}  // namespace

std::vector<paddle::Tensor> SimamForward(const paddle::Tensor& x_in, double e_lambda, int num_threads) {
  check_input(x_in);
  const paddle::Tensor x = x_in.is_contiguous() ? x_in : x_in.contiguous();
  const auto shape = x.shape();
  const int64_t channels = shape[0] * shape[1];
  const int64_t N = shape[2] * shape[3];
  auto y = paddle::empty(shape, x.dtype(), x.place());
  auto mean = paddle::empty({shape[0], shape[1]}, x.dtype(), x.place());
  auto k = paddle::empty({shape[0], shape[1]}, x.dtype(), x.place());
  if (channels > 0 && N > 0) {
    advise_huge_pages(y.data(), static_cast<size_t>(y.numel()) * phi::SizeOf(y.dtype()));
    PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_fused", ([&] {
                                 forward_channels<data_t>(x.data<data_t>(), y.data<data_t>(), mean.data<data_t>(),
                                                          k.data<data_t>(), channels, N, e_lambda, num_threads);
                               }));
  }
  return {y, mean, k};
}

std::vector<paddle::Tensor> SimamBackward(const paddle::Tensor& x_in, const paddle::Tensor& mean,
                                          const paddle::Tensor& k, const paddle::Tensor& grad_in, int num_threads) {
  check_input(x_in);
  const paddle::Tensor x = x_in.is_contiguous() ? x_in : x_in.contiguous();
  const paddle::Tensor grad = grad_in.is_contiguous() ? grad_in : grad_in.contiguous();
  const auto shape = x.shape();
  const int64_t channels = shape[0] * shape[1];
  const int64_t N = shape[2] * shape[3];
  auto dx = paddle::empty(shape, x.dtype(), x.place());
  if (channels > 0 && N > 0) {
    advise_huge_pages(dx.data(), static_cast<size_t>(dx.numel()) * phi::SizeOf(dx.dtype()));
    PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_fused_grad", ([&] {
                                 backward_channels<data_t>(x.data<data_t>(), mean.data<data_t>(), k.data<data_t>(),
                                                           grad.data<data_t>(), dx.data<data_t>(), channels, N,
                                                           num_threads);
                               }));
  }
  return {dx};
}

std::vector<std::vector<int64_t>> SimamInferShape(const std::vector<int64_t>& x_shape) {
  std::vector<int64_t> stats = {x_shape[0], x_shape[1]};
  return {x_shape, stats, stats};
}

std::vector<paddle::DataType> SimamInferDtype(const paddle::DataType& x_dtype) {
  return {x_dtype, x_dtype, x_dtype};
}

PD_BUILD_OP(simam_fused)
    .Inputs({"X"})
    .Outputs({"Y", "Mean", "K"})
    .Attrs({"e_lambda: double", "num_threads: int"})
    .SetKernelFn(PD_KERNEL(SimamForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SimamInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SimamInferDtype));

PD_BUILD_GRAD_OP(simam_fused)
    .Inputs({"X", "Mean", "K", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"num_threads: int"})
    .SetKernelFn(PD_KERNEL(SimamBackward));
