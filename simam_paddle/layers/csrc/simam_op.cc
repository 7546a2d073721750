// Fused CPU kernel of SimAM (Yang et al., ICML 2021) for PaddlePaddle custom operators.
//
// The forward op returns y and the per-channel statistics mu and k (see simam_channel.h for the
// formula); the backward op reads only x, mu, k and dL/dy, so a training step keeps no full-size
// intermediate. Channels may be split across OpenMP threads.

#include "simam_channel.h"

namespace {

using simam::ChannelSize;

// Channels [begin, end), a block at a time: the statistics, then the outputs.
template <typename T>
inline __attribute__((always_inline)) void forward_range_impl(const T* x, T* y, T* mean, T* k, int64_t begin,
                                                              int64_t end, const ChannelSize& size,
                                                              double lambda) {
  const int64_t N = size.N;
  bool finite[simam::kChannelBlock];
  for (int64_t c0 = begin; c0 < end; c0 += simam::kChannelBlock) {
    const int64_t c1 = std::min(end, c0 + simam::kChannelBlock);
    simam::block_stats(x, c0, c1, size, lambda, mean, k, finite);
    for (int64_t c = c0; c < c1; ++c) {
      if (!finite[c - c0]) {
        std::fill(y + c * N, y + (c + 1) * N, mean[c]);  // NaN
        continue;
      }
      simam::channel_forward(x + c * N, y + c * N, mean[c], k[c], size.spill_fits(c, end) ? size.spilled : N);
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void backward_range_impl(const T* x, const T* mean, const T* k, const T* g,
                                                               T* dx, int64_t begin, int64_t end,
                                                               const ChannelSize& size, T* scratch) {
  const int64_t N = size.N;
  for (int64_t c = begin; c < end; ++c) {
    simam::channel_backward(x + c * N, g + c * N, dx + c * N, mean[c], k[c], size,
                            size.spill_fits(c, end) ? size.spilled : N, scratch);
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

}  // namespace

std::vector<paddle::Tensor> SimamForward(const paddle::Tensor& x_in, double e_lambda) {
  simam::check_cpu_4d(x_in, "simam_fused");
  const paddle::Tensor x = simam::contiguous(x_in);
  const auto shape = x.shape();
  const int64_t channels = shape[0] * shape[1];
  const ChannelSize size(shape[2] * shape[3]);
  auto y = simam::new_output(shape, x);
  auto mean = simam::new_stats(x);
  auto k = simam::new_stats(x);
  if (channels > 0 && size.N > 0) {
    PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_fused", ([&] {
                                 const data_t* xd = x.data<data_t>();
                                 data_t *yd = y.data<data_t>(), *md = mean.data<data_t>(), *kd = k.data<data_t>();
                                 simam::split_channels(channels, size.N, [&](int64_t begin, int64_t end) {
                                   forward_range(xd, yd, md, kd, begin, end, size, e_lambda);
                                 });
                               }));
  }
  return {y, mean, k};
}

std::vector<paddle::Tensor> SimamBackward(const paddle::Tensor& x_in, const paddle::Tensor& mean,
                                          const paddle::Tensor& k, const paddle::Tensor& grad_in) {
  simam::check_cpu_4d(x_in, "simam_fused_grad");
  const paddle::Tensor x = simam::contiguous(x_in);
  const paddle::Tensor grad = simam::contiguous(grad_in);
  const auto shape = x.shape();
  const int64_t channels = shape[0] * shape[1];
  const ChannelSize size(shape[2] * shape[3]);
  auto dx = simam::new_output(shape, x);
  if (channels > 0 && size.N > 0) {
    PD_DISPATCH_FLOATING_TYPES(x.type(), "simam_fused_grad", ([&] {
                                 const data_t *xd = x.data<data_t>(), *md = mean.data<data_t>(),
                                              *kd = k.data<data_t>(), *gd = grad.data<data_t>();
                                 data_t* dxd = dx.data<data_t>();
                                 simam::split_channels(channels, size.N, [&](int64_t begin, int64_t end) {
                                   std::vector<data_t> scratch(simam::backward_scratch_size(size));
                                   backward_range(xd, md, kd, gd, dxd, begin, end, size, scratch.data());
                                 });
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
    .Attrs({"e_lambda: double"})
    .SetKernelFn(PD_KERNEL(SimamForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SimamInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SimamInferDtype));

PD_BUILD_GRAD_OP(simam_fused)
    .Inputs({"X", "Mean", "K", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
        .SetKernelFn(PD_KERNEL(SimamBackward));
