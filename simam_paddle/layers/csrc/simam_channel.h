// Per-channel arithmetic of SimAM shared by the CPU operators (simam_op.cc, simam_relu_pool_op.cc).
//
// For one channel x of N = H*W values (n = max(N - 1, 1)):
//   mu = mean(x),  var = sum((x - mu)^2) / n,  k = 1 / (4 * (var + lambda))
//   e  = (x - mu)^2 * k + 0.5,  s = sigmoid(e),  y = x * s
// H*W == 1 gives var = 0, e = 0.5 (the limit documented in simam.py).
// With d = x - mu, a_i = g_i * x_i * s_i * (1 - s_i), S1 = sum(a * d), S2 = sum(a * d^2):
//   dL/dx_i = g_i * s_i + 2k * (a_i * d_i - S1 / N) - (8 k^2 / n) * S2 * d_i
// Each channel is processed while it sits in cache (sums in double).

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "paddle/extension.h"
#include "parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__linux__)
// One build serves any x86-64 CPU: the loops are compiled for AVX-512, AVX2 and the baseline,
// and the best one is picked when the library loads (GCC 12+ on Linux; elsewhere the baseline).
#define SIMAM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMAM_MULTIVERSION
#endif

namespace simam {

// exp(-e) for e >= 0 (here e >= 0.5). In float: e is clamped to 87 (exp(-87) ~ 1.6e-38, still
// normal; 1 + exp(-e) rounds to 1 long before), then -e = m*ln2 + r with |r| <= ln2/2 and a
// degree-5 polynomial for exp(r), fitted for least maximal relative error (7.5e-8, 2e-7 with
// float's rounding: below what float32 SimAM needs by a factor of 50). The clamp is done on the
// bit pattern (positive floats order like their bits) and every step is branch-free, so that the
// loops calling it vectorise on every instruction set.
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
  float p = 0.008297654800117016f;  // degree-5 fit of exp(r) on |r| <= ln2/2: relative error 7.5e-8
  p = p * r + 0.04191538318991661f;
  p = p * r + 0.16667574644088745f;
  p = p * r + 0.49998894333839417f;
  p = p * r + 0.9999997019767761f;
  p = p * r + 1.0000001192092896f;
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
// a multiple of 8. The element-wise loops of a channel run over `spilled` values when the
// channels after it in the same thread's range hold the spill (they overwrite it later): a whole
// number of 8-wide vectors leaves no scalar remainder, which on 7x7 maps costs more than the
// spill (rounding to 16, a whole number of AVX-512 vectors, was slower there).
struct ChannelSize {
  explicit ChannelSize(int64_t positions)
      : N(positions),
        spilled((positions + 7) / 8 * 8),
        inv_N(1.0 / static_cast<double>(positions)),
        inv_n(1.0 / static_cast<double>(std::max<int64_t>(positions - 1, 1))) {}
  // Whether channel c may spill: the channels after it in [c, end) must hold the spill.
  bool spill_fits(int64_t c, int64_t end) const { return spilled <= (end - c) * N; }
  int64_t N, spilled;
  double inv_N, inv_n;
};

// mu and k of one channel, or finite == false when the channel holds an inf or a NaN (the formula is
// then NaN channel-wide). Both sums in one pass, in double, shifted by the first value so that the
// variance does not come from the difference of two large numbers.
template <typename T>
struct ChannelStats {
  T mu, k;
  bool finite;
};

template <typename T>
inline __attribute__((always_inline)) ChannelStats<T> channel_stats(const T* xc, const ChannelSize& size,
                                                                    double lambda) {
  const int64_t N = size.N;
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
  if (!std::isfinite(s1) || !std::isfinite(s2)) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    return {nan, nan, false};
  }
  const double ss = std::max(s2 - s1 * s1 * size.inv_N, 0.0);
  return {static_cast<T>(x0 + s1 * size.inv_N), static_cast<T>(0.25 / (ss * size.inv_n + lambda)), true};
}

// y = x * sigmoid(e) over len values of one channel.
template <typename T>
inline __attribute__((always_inline)) void channel_forward(const T* xc, T* yc, T mu, T k, int64_t len) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const T d = xc[i] - mu;
    const T e = d * (d * k) + static_cast<T>(0.5);  // (d * k) first: d * d overflows float sooner
    yc[i] = xc[i] / (static_cast<T>(1) + exp_minus(e));
  }
}

// dL/dx of one channel from x, dL/dy and its statistics, over len values. Scratch holds four buffers
// of `size.spilled` values: s, a and the terms of the two sums, taken over w = d * k rather than d
// (S1 = sum(a w) = k sum(a d), S2 = sum(a w^2) = k^2 sum(a d^2)) so that no intermediate overflows
// float for large inputs:   dL/dx = g s + 2 a w - (8 S2 / n) d - 2 S1 / N
template <typename T>
inline __attribute__((always_inline)) void channel_backward(const T* xc, const T* gc, T* dxc, T mu, T k,
                                                            const ChannelSize& size, int64_t len, T* scratch) {
  T* s = scratch;
  T* a = s + size.spilled;
  T* aw = a + size.spilled;
  T* aww = aw + size.spilled;
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
  const T c1 = static_cast<T>(2.0 * sum_double(aw, size.N) * size.inv_N);
  const T c2 = static_cast<T>(8.0 * sum_double(aww, size.N) * size.inv_n);
  const T two_k = static_cast<T>(2) * k;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const T d = xc[i] - mu;
    dxc[i] = gc[i] * s[i] + (two_k * a[i] - c2) * d - c1;
  }
}

// Scratch values channel_backward needs.
inline size_t backward_scratch_size(const ChannelSize& size) { return 4 * static_cast<size_t>(size.spilled); }

// The forward takes channels in blocks of kChannelBlock: first the statistics of the block, then
// its element-wise loops. The statistics are a chain of dependent additions ending in a division;
// channel after channel, each element-wise loop would wait for its own chain, while the chains of
// a block are independent and overlap in the CPU (faster on 7x7 maps, where a channel is
// 49 values; the same in the backward, for its sums, was no faster).
constexpr int64_t kChannelBlock = 16;

// mean, k and finite-ness of channels [c0, c1), c1 - c0 <= kChannelBlock.
template <typename T>
inline __attribute__((always_inline)) void block_stats(const T* x, int64_t c0, int64_t c1, const ChannelSize& size,
                                                       double lambda, T* mean, T* k, bool* finite) {
  for (int64_t c = c0; c < c1; ++c) {
    const auto stats = channel_stats(x + c * size.N, size, lambda);
    mean[c] = stats.mu;
    k[c] = stats.k;
    finite[c - c0] = stats.finite;
  }
}

// A max-pool of one channel: kernel size x size, stride, no padding, floor mode.
struct PoolGeometry {
  int64_t H, W, size, stride, OH, OW;  // size == 0: no pool, the output is relu(y) itself
  int64_t outputs() const { return size ? OH * OW : H * W; }
};

// The window of output (oh, ow) in one channel's y [H, W]: the maximum, and the index of its first occurrence.
template <typename T>
inline void window_max(const T* y, const PoolGeometry& g, int64_t oh, int64_t ow, T* max_out, int64_t* where) {
  const int64_t h0 = oh * g.stride, w0 = ow * g.stride;
  T best = y[h0 * g.W + w0];
  int64_t at = h0 * g.W + w0;
  for (int64_t h = h0; h < h0 + g.size; ++h) {
    for (int64_t w = w0; w < w0 + g.size; ++w) {
      if (y[h * g.W + w] > best) {
        best = y[h * g.W + w];
        at = h * g.W + w;
      }
    }
  }
  *max_out = best;
  *where = at;
}

// The output of one finite channel from its statistics: y = x * sigmoid(e) over len values, then
// max(y, 0) with relu, then the max-pool when geo has one. Without a pool y is written to oc; with
// one, y goes to `y` (len values of scratch) and only the pooled values to oc.
template <typename T>
inline __attribute__((always_inline)) void channel_output(const T* xc, T* oc, T mu, T k, int64_t len,
                                                          const PoolGeometry& geo, bool relu, T* y) {
  if (!geo.size) {
    channel_forward(xc, oc, mu, k, len);
    if (relu) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) oc[i] = oc[i] > 0 ? oc[i] : static_cast<T>(0);
    }
    return;
  }
  channel_forward(xc, y, mu, k, len);
  for (int64_t oh = 0; oh < geo.OH; ++oh) {
    for (int64_t ow = 0; ow < geo.OW; ++ow) {
      T best;
      int64_t where;
      window_max(y, geo, oh, ow, &best, &where);
      oc[oh * geo.OW + ow] = relu && !(best > 0) ? static_cast<T>(0) : best;  // max over the window of relu(y)
    }
  }
}

// The B*C channels go out in chunks of about kChunkValues values (see parallel.h).
constexpr int64_t kChunkValues = 16384;

// Runs body(begin, end) over consecutive ranges of channels that together cover [0, channels).
template <typename Body>
void split_channels(int64_t channels, int64_t N, const Body& body) {
  const int64_t chunk = std::max<int64_t>(1, kChunkValues / N);
  const int64_t chunks = (channels + chunk - 1) / chunk;
  for_each_item(chunks, team_for(channels * N), [] { return 0; },
                [&](int64_t i, int) { body(i * chunk, std::min(channels, (i + 1) * chunk)); });
}

// A fresh output buffer costs a page fault per 4 KiB on first write: for a [128, 48, 32, 32]
// float32 tensor that takes longer than the arithmetic. Where Linux offers transparent huge pages
// on request, ask for them on the 2 MiB-aligned inside of large outputs: one fault per 2 MiB.
inline void advise_huge_pages(void* data, size_t bytes) {
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

inline void check_cpu_4d(const paddle::Tensor& x, const char* op) {
  PD_CHECK(x.is_cpu(), op, ": the kernel runs on CPU tensors only");
  PD_CHECK(x.shape().size() == 4, op, ": expected a 4-D [B, C, H, W] tensor");
}

// t itself when its values lie in order in memory, else a contiguous copy.
inline paddle::Tensor contiguous(const paddle::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

// The per-channel statistics of x [B, C, H, W] (mean or k): a [B, C] tensor of x's dtype.
inline paddle::Tensor new_stats(const paddle::Tensor& x) {
  return paddle::empty({x.shape()[0], x.shape()[1]}, x.dtype(), x.place());
}

// A new CPU tensor of `shape` for an output that the kernel writes in full.
inline paddle::Tensor new_output(const std::vector<int64_t>& shape, const paddle::Tensor& like) {
  auto out = paddle::empty(shape, like.dtype(), like.place());
  if (out.numel() > 0) advise_huge_pages(out.data(), static_cast<size_t>(out.numel()) * phi::SizeOf(out.dtype()));
  return out;
}

}  // namespace simam
