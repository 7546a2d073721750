// SimAM, then ReLU, then (optionally) a max-pool, as one CPU operator: the block that follows each
// convolution of AlexNet-SimAM.
//
//   out = max_pool(relu(simam(x)))     pool: kernel p x p, stride t, no padding, floor mode
//   out = relu(simam(x))               pool_size == 0
//
// Why fuse: run as three operators, a training step keeps x (for SimAM's backward) and relu(y)
// (for the ReLU's and the pool's), two full-size tensors. This operator keeps only x and two
// numbers per channel, and recomputes y in its backward, so with the pool fused AlexNet-SimAM keeps
// no more than AlexNet does. The gradient routes as Paddle's operators route it: the max-pool gives
// each output's gradient to the first position of its window (row by row) that holds the maximum,
// and the ReLU passes it where relu(y) > 0.

#include "simam_channel.h"

namespace {

using simam::ChannelSize;
using simam::PoolGeometry;
using simam::window_max;

template <typename T>
inline __attribute__((always_inline)) void forward_range_impl(const T* x, T* out, T* mean, T* k, int64_t begin,
                                                              int64_t end, const ChannelSize& size,
                                                              const PoolGeometry& geo, double lambda, T* y) {
  const int64_t N = size.N, P = geo.outputs();
  bool finite[simam::kChannelBlock];
  for (int64_t c0 = begin; c0 < end; c0 += simam::kChannelBlock) {
    const int64_t c1 = std::min(end, c0 + simam::kChannelBlock);
    simam::block_stats(x, c0, c1, size, lambda, mean, k, finite);
    for (int64_t c = c0; c < c1; ++c) {
      T* oc = out + c * P;
      if (!finite[c - c0]) {
        std::fill(oc, oc + P, mean[c]);  // NaN
      } else {
        simam::channel_output(x + c * N, oc, mean[c], k[c], size.spill_fits(c, end) ? size.spilled : N, geo, true, y);
      }
    }
  }
}

// Per channel: y again (and its ReLU mask), dL/dy from the output's gradient, then SimAM's backward.
template <typename T>
inline __attribute__((always_inline)) void backward_range_impl(const T* x, const T* mean, const T* k, const T* g,
                                                               T* dx, int64_t begin, int64_t end,
                                                               const ChannelSize& size, const PoolGeometry& geo,
                                                               T* y, T* gy, T* scratch) {
  const int64_t N = size.N, P = geo.outputs();
  for (int64_t c = begin; c < end; ++c) {
    const T* xc = x + c * N;
    const T* gc = g + c * P;
    const int64_t len = size.spill_fits(c, end) ? size.spilled : N;
    simam::channel_forward(xc, y, mean[c], k[c], len);
    if (geo.size) {
      std::fill(gy, gy + size.spilled, static_cast<T>(0));
      for (int64_t oh = 0; oh < geo.OH; ++oh) {
        for (int64_t ow = 0; ow < geo.OW; ++ow) {
          T best;
          int64_t where;
          window_max(y, geo, oh, ow, &best, &where);
          if (best > 0) gy[where] += gc[oh * geo.OW + ow];  // relu(best) == 0 passes no gradient
        }
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) gy[i] = y[i] > 0 ? gc[i] : static_cast<T>(0);
    }
    simam::channel_backward(xc, gy, dx + c * N, mean[c], k[c], size, len, scratch);
  }
}

SIMAM_MULTIVERSION void forward_range(const float* x, float* out, float* mean, float* k, int64_t begin,
                                      int64_t end, const ChannelSize& size, const PoolGeometry& geo, double lambda,
                                      float* y) {
  forward_range_impl<float>(x, out, mean, k, begin, end, size, geo, lambda, y);
}
SIMAM_MULTIVERSION void forward_range(const double* x, double* out, double* mean, double* k, int64_t begin,
                                      int64_t end, const ChannelSize& size, const PoolGeometry& geo, double lambda,
                                      double* y) {
  forward_range_impl<double>(x, out, mean, k, begin, end, size, geo, lambda, y);
}
SIMAM_MULTIVERSION void backward_range(const float* x, const float* mean, const float* k, const float* g, float* dx,
                                       int64_t begin, int64_t end, const ChannelSize& size, const PoolGeometry& geo,
                                       float* y, float* gy, float* scratch) {
  backward_range_impl<float>(x, mean, k, g, dx, begin, end, size, geo, y, gy, scratch);
}
SIMAM_MULTIVERSION void backward_range(const double* x, const double* mean, const double* k, const double* g,
                                       double* dx, int64_t begin, int64_t end, const ChannelSize& size,
                                       const PoolGeometry& geo, double* y, double* gy, double* scratch) {
  backward_range_impl<double>(x, mean, k, g, dx, begin, end, size, geo, y, gy, scratch);
}

PoolGeometry pool_geometry(const std::vector<int64_t>& shape, int pool_size, int pool_stride) {
  PD_CHECK(pool_size >= 0 && (pool_size == 0 || pool_stride > 0),
           "simam_relu_maxpool: pool_size must be >= 0 and pool_stride > 0");
  PD_CHECK(pool_size <= shape[2] && pool_size <= shape[3], "simam_relu_maxpool: the ", pool_size, "x", pool_size,
           " pool window is larger than the ", shape[2], "x", shape[3], " map");
  PoolGeometry geo{shape[2], shape[3], pool_size, pool_stride, 0, 0};
  if (pool_size) {
    geo.OH = (geo.H - pool_size) / pool_stride + 1;
    geo.OW = (geo.W - pool_size) / pool_stride + 1;
  }
  return geo;
}

std::vector<int64_t> output_shape(const std::vector<int64_t>& shape, const PoolGeometry& geo) {
  return geo.size ? std::vector<int64_t>{shape[0], shape[1], geo.OH, geo.OW} : shape;
}

}  // namespace

std::vector<paddle::Tensor> SimamReluPoolForward(const paddle::Tensor& x_in, double e_lambda, int pool_size,
                                                 int pool_stride) {
  simam::check_cpu_4d(x_in, "simam_relu_maxpool");
  const paddle::Tensor x = simam::contiguous(x_in);
  const auto shape = x.shape();
  const PoolGeometry geo = pool_geometry(shape, pool_size, pool_stride);
  const int64_t channels = shape[0] * shape[1];
  const ChannelSize size(shape[2] * shape[3]);
  auto out = simam::new_output(output_shape(shape, geo), x);
  auto mean = simam::new_stats(x);
  auto k = simam::new_stats(x);
  if (channels > 0 && size.N > 0) {
    PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_relu_maxpool", ([&] {
                                 const data_t* xd = x.data<data_t>();
                                 data_t *od = out.data<data_t>(), *md = mean.data<data_t>(), *kd = k.data<data_t>();
                                 simam::split_channels(channels, size.N, [&](int64_t begin, int64_t end) {
                                   std::vector<data_t> y(size.spilled);
                                   forward_range(xd, od, md, kd, begin, end, size, geo, e_lambda, y.data());
                                 });
                               }));
  }
  return {out, mean, k};
}

std::vector<paddle::Tensor> SimamReluPoolBackward(const paddle::Tensor& x_in, const paddle::Tensor& mean,
                                                  const paddle::Tensor& k, const paddle::Tensor& grad_in,
                                                  int pool_size, int pool_stride) {
  simam::check_cpu_4d(x_in, "simam_relu_maxpool_grad");
  const paddle::Tensor x = simam::contiguous(x_in);
  const paddle::Tensor grad = simam::contiguous(grad_in);
  const auto shape = x.shape();
  const PoolGeometry geo = pool_geometry(shape, pool_size, pool_stride);
  const int64_t channels = shape[0] * shape[1];
  const ChannelSize size(shape[2] * shape[3]);
  auto dx = simam::new_output(shape, x);
  if (channels > 0 && size.N > 0) {
    PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_relu_maxpool_grad", ([&] {
                                 const data_t *xd = x.data<data_t>(), *md = mean.data<data_t>(),
                                              *kd = k.data<data_t>(), *gd = grad.data<data_t>();
                                 data_t* dxd = dx.data<data_t>();
                                 simam::split_channels(channels, size.N, [&](int64_t begin, int64_t end) {
                                   std::vector<data_t> work(2 * size.spilled + simam::backward_scratch_size(size));
                                   data_t* y = work.data();
                                   backward_range(xd, md, kd, gd, dxd, begin, end, size, geo, y, y + size.spilled,
                                                  y + 2 * size.spilled);
                                 });
                               }));
  }
  return {dx};
}

std::vector<std::vector<int64_t>> SimamReluPoolInferShape(const std::vector<int64_t>& x_shape, double,
                                                          int pool_size, int pool_stride) {
  std::vector<int64_t> stats = {x_shape[0], x_shape[1]};
  return {output_shape(x_shape, pool_geometry(x_shape, pool_size, pool_stride)), stats, stats};
}

std::vector<paddle::DataType> SimamReluPoolInferDtype(const paddle::DataType& x_dtype) {
  return {x_dtype, x_dtype, x_dtype};
}

PD_BUILD_OP(simam_relu_maxpool)
    .Inputs({"X"})
    .Outputs({"Out", "Mean", "K"})
    .Attrs({"e_lambda: double", "pool_size: int", "pool_stride: int"})
    .SetKernelFn(PD_KERNEL(SimamReluPoolForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SimamReluPoolInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SimamReluPoolInferDtype));

PD_BUILD_GRAD_OP(simam_relu_maxpool)
    .Inputs({"X", "Mean", "K", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"pool_size: int", "pool_stride: int"})
    .SetKernelFn(PD_KERNEL(SimamReluPoolBackward));
