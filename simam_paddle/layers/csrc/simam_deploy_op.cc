// SimAM, optionally followed by a ReLU and a max-pool, as one operator for exported models run by
// Paddle Inference:
//
//   out = max_pool(relu(simam(x)))     pool: kernel p x p, stride t, no padding, floor mode
//   out = relu(simam(x))               pool_size == 0 (and without relu: simam(x))
//
// With oneDNN on, Paddle Inference keeps a convolution's output in the memory format oneDNN chose
// for it (a tensor of layout ONEDNN with a oneDNN memory descriptor: channels-last "nhwc" on the
// AVX2 machine this was written on; NCHW after some operators; channel-blocked formats such as
// "nChw8c" are possible elsewhere) and hands that buffer, as it is, to a custom operator. This
// operator reads the descriptor and works in that format: dense channels-last and dense NCHW are
// computed where they lie, and the output is declared dense in the same format, so the next oneDNN
// operator takes it without a reorder. Any other format (blocked, padded, unusual strides) is first
// reordered by oneDNN to dense nhwc, and the output is nhwc. Tensors of Paddle's own layout
// (oneDNN off, the dynamic graph) are NCHW.
//
// The per-channel arithmetic is the training kernel's (simam_channel.h): sums shifted by the first
// value (in channels-last runs, float sums over 16 positions added up in double), k = 1 / (4 (var +
// lambda)), y = x / (1 + exp(-e)); then max(y, 0) and the pool. With the pool, y of one image's
// channels is computed into a scratch buffer while it sits in cache and only the pooled values are
// written: the operator costs what the max-pool it replaces costs, plus SimAM's arithmetic.
// float32 only in the oneDNN formats (oneDNN inference is float32); float32 and float64 in NCHW.
// Threads: as many as oneDNN runs with in this process (parallel.h; Paddle Inference sets them from
// its CPU math thread setting).

// dense_tensor.h declares DenseTensor::mem_desc() only outside custom-operator builds; the
// declaration adds no data member, so the class is the same either way.
#ifdef PADDLE_WITH_CUSTOM_KERNEL
#undef PADDLE_WITH_CUSTOM_KERNEL
#define SIMAM_RESTORE_CUSTOM_KERNEL
#endif
#ifndef PADDLE_WITH_DNNL
#define PADDLE_WITH_DNNL
#endif
#include "paddle/phi/core/dense_tensor.h"
#ifdef SIMAM_RESTORE_CUSTOM_KERNEL
#define PADDLE_WITH_CUSTOM_KERNEL
#endif



#include "oneapi/dnnl/dnnl.hpp"
#include "simam_channel.h"

namespace {

using simam::ChannelSize;
using simam::PoolGeometry;

constexpr int64_t kMaxLanes = 64;
constexpr int64_t kStatsBlock = 16;  // positions summed in float before the sums go into double

// One image's channels [c0, c0 + lanes) of a dense channels-last tensor: value (p, c) at
// x[p * stride + c] for positions p < H*W. The statistics of all lanes in one pass over the
// positions (vectorised across the lanes), then y, then the pool. `scratch` holds H*W*lanes values
// (used with a pool only); out points to the first output value of the lanes, `out_stride` apart.
template <typename T>
inline __attribute__((always_inline)) void lanes_forward_impl(const T* x, T* out, int64_t lanes, int64_t stride,
                                                              int64_t out_stride, const ChannelSize& size,
                                                              const PoolGeometry& geo, double lambda, bool relu,
                                                              T* scratch) {
  double s1[kMaxLanes], s2[kMaxLanes];
  T x0[kMaxLanes], mu[kMaxLanes], k[kMaxLanes];
  for (int64_t c = 0; c < lanes; ++c) {
    x0[c] = x[c];
    s1[c] = 0.0;
    s2[c] = 0.0;
  }
  for (int64_t p0 = 0; p0 < size.N; p0 += kStatsBlock) {
    T b1[kMaxLanes], b2[kMaxLanes];
    for (int64_t c = 0; c < lanes; ++c) b1[c] = b2[c] = 0;
    const int64_t p1 = std::min(size.N, p0 + kStatsBlock);
    for (int64_t p = p0; p < p1; ++p) {
      const T* row = x + p * stride;
#pragma omp simd
      for (int64_t c = 0; c < lanes; ++c) {
        const T d = row[c] - x0[c];
        b1[c] += d;
        b2[c] += d * d;
      }
    }
#pragma omp simd
    for (int64_t c = 0; c < lanes; ++c) {
      s1[c] += static_cast<double>(b1[c]);
      s2[c] += static_cast<double>(b2[c]);
    }
  }
  bool all_finite = true;
  for (int64_t c = 0; c < lanes; ++c) {
    if (!std::isfinite(s1[c]) || !std::isfinite(s2[c])) {
      all_finite = false;
      mu[c] = k[c] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    const double ss = std::max(s2[c] - s1[c] * s1[c] * size.inv_N, 0.0);
    mu[c] = static_cast<T>(static_cast<double>(x0[c]) + s1[c] * size.inv_N);
    k[c] = static_cast<T>(0.25 / (ss * size.inv_n + lambda));
  }
  // y (with the ReLU) into the output, or into the scratch rows for the pool
  const T floor = relu ? static_cast<T>(0) : -std::numeric_limits<T>::infinity();
  T* y = geo.size ? scratch : out;
  const int64_t y_stride = geo.size ? lanes : out_stride;
  for (int64_t p = 0; p < size.N; ++p) {
    const T* row = x + p * stride;
    T* yrow = y + p * y_stride;
#pragma omp simd
    for (int64_t c = 0; c < lanes; ++c) {
      const T d = row[c] - mu[c];
      const T e = d * (d * k[c]) + static_cast<T>(0.5);
      const T v = row[c] / (static_cast<T>(1) + simam::exp_minus(e));
      yrow[c] = v < floor ? floor : v;  // NaN stays NaN
    }
  }
  if (!all_finite) {  // the formula is NaN channel-wide where a channel holds an inf or a NaN
    for (int64_t c = 0; c < lanes; ++c) {
      if (mu[c] != mu[c]) {
        for (int64_t p = 0; p < size.N; ++p) y[p * y_stride + c] = mu[c];
      }
    }
  }
  if (!geo.size) return;
  for (int64_t oh = 0; oh < geo.OH; ++oh) {
    for (int64_t ow = 0; ow < geo.OW; ++ow) {
      T best[kMaxLanes];
      const T* first = scratch + (oh * geo.stride * geo.W + ow * geo.stride) * lanes;
      for (int64_t c = 0; c < lanes; ++c) best[c] = first[c];
      for (int64_t h = oh * geo.stride; h < oh * geo.stride + geo.size; ++h) {
        for (int64_t w = ow * geo.stride; w < ow * geo.stride + geo.size; ++w) {
          const T* v = scratch + (h * geo.W + w) * lanes;
#pragma omp simd
          for (int64_t c = 0; c < lanes; ++c) best[c] = v[c] > best[c] || v[c] != v[c] ? v[c] : best[c];
        }
      }
      T* o = out + (oh * geo.OW + ow) * out_stride;
      for (int64_t c = 0; c < lanes; ++c) o[c] = best[c];
    }
  }
}

// Channels [begin, end) of an NCHW tensor, one plane of N values each; `scratch` holds one plane.
template <typename T>
inline __attribute__((always_inline)) void planes_forward_impl(const T* x, T* out, int64_t begin, int64_t end,
                                                               const ChannelSize& size, const PoolGeometry& geo,
                                                               double lambda, bool relu, T* scratch) {
  const int64_t N = size.N, P = geo.outputs();
  for (int64_t c = begin; c < end; ++c) {
    const T* xc = x + c * N;
    T* oc = out + c * P;
    const auto stats = simam::channel_stats(xc, size, lambda);
    if (!stats.finite) {
      std::fill(oc, oc + P, stats.mu);  // NaN
    } else {
      simam::channel_output(xc, oc, stats.mu, stats.k, N, geo, relu, scratch);
    }
  }
}

SIMAM_MULTIVERSION void lanes_forward(const float* x, float* out, int64_t lanes, int64_t stride, int64_t out_stride,
                                      const ChannelSize& size, const PoolGeometry& geo, double lambda, bool relu,
                                      float* scratch) {
  lanes_forward_impl<float>(x, out, lanes, stride, out_stride, size, geo, lambda, relu, scratch);
}
SIMAM_MULTIVERSION void planes_forward(const float* x, float* out, int64_t begin, int64_t end,
                                       const ChannelSize& size, const PoolGeometry& geo, double lambda, bool relu,
                                       float* scratch) {
  planes_forward_impl<float>(x, out, begin, end, size, geo, lambda, relu, scratch);
}
SIMAM_MULTIVERSION void planes_forward(const double* x, double* out, int64_t begin, int64_t end,
                                       const ChannelSize& size, const PoolGeometry& geo, double lambda, bool relu,
                                       double* scratch) {
  planes_forward_impl<double>(x, out, begin, end, size, geo, lambda, relu, scratch);
}

// Dense channels-last float32 in memory, [B, H, W, C] in, [B, OH, OW, C] out. Each image's
// channels go out in groups of at most kMaxLanes (a multiple of 8, smaller when there are few
// images, so that every thread gets work).
void channels_last_forward(const float* x, float* out, int64_t batch, int64_t channels, const ChannelSize& size,
                           const PoolGeometry& geo, double lambda, bool relu) {
  const int team = simam::team_for(batch * channels * size.N);
  const int64_t wanted = std::max<int64_t>(1, (4 * team + batch - 1) / batch);  // groups per image
  const int64_t lanes = std::min(kMaxLanes, std::max<int64_t>(8, ((channels + wanted - 1) / wanted + 7) / 8 * 8));
  const int64_t groups = (channels + lanes - 1) / lanes;
  const int64_t P = geo.outputs();
  const size_t scratch_size = geo.size ? static_cast<size_t>(size.N * lanes) : 0;
  simam::for_each_item(batch * groups, team, [&] { return std::vector<float>(scratch_size); },
                       [&](int64_t i, std::vector<float>& scratch) {
                         const int64_t b = i / groups, c0 = (i % groups) * lanes;
                         lanes_forward(x + b * size.N * channels + c0, out + b * P * channels + c0,
                                       std::min(lanes, channels - c0), channels, channels, size, geo, lambda, relu,
                                       scratch.data());
                       });
}

// NCHW, the B*C channels in chunks of about simam::kChunkValues values.
void planes(const paddle::Tensor& x, paddle::Tensor& out, const PoolGeometry& geo, double lambda, bool relu) {
  const auto shape = x.shape();
  const int64_t channels = shape[0] * shape[1];
  const ChannelSize size(shape[2] * shape[3]);
  const int64_t chunk = std::max<int64_t>(1, simam::kChunkValues / size.N);
  const int64_t chunks = (channels + chunk - 1) / chunk;
  PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_deploy", ([&] {
                               const data_t* xd = x.data<data_t>();
                               data_t* od = out.data<data_t>();
                               simam::for_each_item(chunks, simam::team_for(x.numel()),
                                                     [&] { return std::vector<data_t>(geo.size ? size.N : 0); },
                                                     [&](int64_t i, std::vector<data_t>& scratch) {
                                                       planes_forward(xd, od, i * chunk,
                                                                      std::min(channels, (i + 1) * chunk), size, geo,
                                                                      lambda, relu, scratch.data());
                                                     });
                             }));
}

enum class Format { kPlanes, kChannelsLast, kOther };

// The format of a oneDNN descriptor of dims [B, C, H, W]: dense NCHW, dense nhwc, or anything else.
Format format_of(const dnnl::memory::desc& md, const std::vector<int64_t>& shape) {
  if (md.get_ndims() != 4 || md.get_inner_nblks() != 0 || md.get_data_type() != dnnl::memory::data_type::f32) {
    return Format::kOther;
  }
  const int64_t C = shape[1], H = shape[2], W = shape[3];
  if (md.get_size() != static_cast<size_t>(shape[0] * C * H * W) * sizeof(float)) return Format::kOther;  // padded
  const auto s = md.get_strides();
  if (s[3] == 1 && s[2] == W && s[1] == H * W && s[0] == C * H * W) return Format::kPlanes;
  if (s[1] == 1 && s[3] == C && s[2] == W * C && s[0] == H * W * C) return Format::kChannelsLast;
  return Format::kOther;
}

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::memory::desc dense_desc(const std::vector<int64_t>& shape, dnnl::memory::format_tag tag) {
  return dnnl::memory::desc({shape[0], shape[1], shape[2], shape[3]}, dnnl::memory::data_type::f32, tag);
}

// The buffer src, described by md, reordered by oneDNN into dense nhwc at dst.
void reorder_to_nhwc(const dnnl::memory::desc& md, const float* src, const std::vector<int64_t>& shape, float* dst) {
  dnnl::memory from(md, cpu_engine(), const_cast<float*>(src));
  dnnl::memory to(dense_desc(shape, dnnl::memory::format_tag::nhwc), cpu_engine(), dst);
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
}

std::vector<int64_t> output_shape(const std::vector<int64_t>& x, int64_t size, int64_t stride) {
  if (!size) return x;
  auto pooled = [&](int64_t n) { return n < 0 ? n : (n - size) / stride + 1; };
  return {x[0], x[1], pooled(x[2]), pooled(x[3])};
}

}  // namespace

std::vector<paddle::Tensor> SimamDeployForward(const paddle::Tensor& x, float e_lambda, bool relu, int pool_size,
                                               int pool_stride) {
  simam::check_cpu_4d(x, "simam_deploy");
  const auto shape = x.shape();
  PD_CHECK(pool_size >= 0 && pool_stride >= 1, "simam_deploy: pool_size must be >= 0 and pool_stride >= 1");
  PD_CHECK(pool_size <= std::min(shape[2], shape[3]), "simam_deploy: the pool window is larger than the map");
  const auto out_shape = output_shape(shape, pool_size, pool_stride);
  const PoolGeometry geo{shape[2], shape[3], pool_size, pool_stride, out_shape[2], out_shape[3]};
  auto out = simam::new_output(out_shape, x);
  if (x.numel() == 0) return {out};
  auto* xd = static_cast<phi::DenseTensor*>(x.impl().get());
  if (xd->layout() != phi::DataLayout::ONEDNN) {
    planes(simam::contiguous(x), out, geo, e_lambda, relu);
    return {out};
  }
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32, "simam_deploy: oneDNN tensors must be float32");
  const dnnl::memory::desc md = xd->mem_desc();
  auto* od = static_cast<phi::DenseTensor*>(out.impl().get());
  const ChannelSize size(shape[2] * shape[3]);
  switch (format_of(md, shape)) {
    case Format::kPlanes:
      planes(x, out, geo, e_lambda, relu);
      od->set_mem_desc(dense_desc(out_shape, dnnl::memory::format_tag::nchw));
      break;
    case Format::kChannelsLast:
      channels_last_forward(x.data<float>(), out.data<float>(), shape[0], shape[1], size, geo, e_lambda, relu);
      od->set_mem_desc(dense_desc(out_shape, dnnl::memory::format_tag::nhwc));
      break;
    case Format::kOther: {
      auto dense = paddle::empty(shape, x.dtype(), x.place());
      reorder_to_nhwc(md, x.data<float>(), shape, dense.data<float>());
      channels_last_forward(dense.data<float>(), out.data<float>(), shape[0], shape[1], size, geo, e_lambda, relu);
      od->set_mem_desc(dense_desc(out_shape, dnnl::memory::format_tag::nhwc));
      break;
    }
  }
  return {out};
}

std::vector<std::vector<int64_t>> SimamDeployInferShape(const std::vector<int64_t>& x_shape, float, bool,
                                                        int pool_size, int pool_stride) {
  return {output_shape(x_shape, pool_size, pool_stride)};
}

std::vector<paddle::DataType> SimamDeployInferDtype(const paddle::DataType& x_dtype) { return {x_dtype}; }

PD_BUILD_OP(simam_deploy)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"e_lambda: float", "relu: bool", "pool_size: int", "pool_stride: int"})
    .SetKernelFn(PD_KERNEL(SimamDeployForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SimamDeployInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SimamDeployInferDtype));

// Which path simam_deploy takes for x, as an int32 [1] tensor: 0 Paddle's own layout (NCHW), then,
// for oneDNN tensors, 1 dense NCHW, 2 dense channels-last, 3 another format (reordered to nhwc
// first). A diagnostic: what memory format an engine hands SimAM at this point of a model.
std::vector<paddle::Tensor> SimamDeployPathForward(const paddle::Tensor& x) {
  simam::check_cpu_4d(x, "simam_deploy_path");
  auto path = paddle::empty({1}, paddle::DataType::INT32, x.place());
  auto* xd = static_cast<phi::DenseTensor*>(x.impl().get());
  int code = 0;
  if (xd->layout() == phi::DataLayout::ONEDNN) {
    code = 1 + static_cast<int>(format_of(xd->mem_desc(), x.shape()));
  }
  path.data<int32_t>()[0] = code;
  return {path};
}

std::vector<std::vector<int64_t>> SimamDeployPathInferShape(const std::vector<int64_t>&) { return {{1}}; }

std::vector<paddle::DataType> SimamDeployPathInferDtype(const paddle::DataType&) { return {paddle::DataType::INT32}; }

PD_BUILD_OP(simam_deploy_path)
    .Inputs({"X"})
    .Outputs({"Path"})
    .SetKernelFn(PD_KERNEL(SimamDeployPathForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SimamDeployPathInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SimamDeployPathInferDtype));
