// 2-D convolution on the CPU through oneDNN, as a Paddle custom operator with its gradient:
//
//   fastconv(x, w, bias) = conv(x, w) + bias      (forward primitive)
//   its gradient: dx (backward-data primitive), dw and dbias (backward-weights primitive)
//
// The attributes need_x_grad / need_weight_grad, set from the inputs' stop_gradient when the
// forward runs, let the gradient skip a primitive whose result nobody reads (dx of the images
// entering a network's first convolution); the skipped output is left uninitialised.
//
// Tensors are Paddle's: float32, NCHW (x, y) and OIHW (w), contiguous. With bf16 set, the
// convolution reads its inputs (x and w forward; dy and w for dx; x and dy for dw) rounded to
// bfloat16 and accumulates and writes float32 (y, dx, dw, dbias): oneDNN's bf16 convolutions, for
// CPUs with bf16 instructions (AVX512-BF16, AMX); the rounding happens in the reorders below.
// oneDNN chooses its own layouts for the computation (format_tag::any); the operands are reordered into them and the
// result back to NCHW. Each convolution shape has its primitives built once per process (a cache
// keyed by the shape, the attributes and the thread count). The library linked is the libdnnl.so.3
// that Paddle ships (see fastconv/kernel.py); the headers in onednn/ are of the same minor version.
//
// Threads: oneDNN runs on the OpenMP runtime Paddle's oneDNN uses, with its omp_get_max_threads()
// (this library links that runtime: see simam_paddle's threads.py).

#include <omp.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

namespace {

using dnnl::memory;
using Dims = memory::dims;
using Tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution: shapes and attributes as oneDNN takes them.
struct Geometry {
  Dims src, weights, bias, dst, strides, dilates, pad_l, pad_r;
  int threads = 1;
  bool bf16 = false;

  std::string key() const {
    std::ostringstream out;
    for (const Dims* d : {&src, &weights, &dst, &strides, &dilates, &pad_l, &pad_r}) {
      for (auto v : *d) out << v << ',';
      out << ';';
    }
    out << threads << (bf16 ? "bf16" : "f32");
    return out.str();
  }
};

Geometry make_geometry(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                       const std::vector<int>& strides, const std::vector<int>& paddings,
                       const std::vector<int>& dilations, bool bf16) {
  PD_CHECK(x_shape.size() == 4 && w_shape.size() == 4, "fastconv: x and w must be 4-D (NCHW, OIHW)");
  PD_CHECK(strides.size() == 2 && paddings.size() == 4 && dilations.size() == 2,
           "fastconv: strides [h, w], paddings [top, bottom, left, right], dilations [h, w]");
  PD_CHECK(x_shape[1] == w_shape[1], "fastconv: x has ", x_shape[1], " channels, w expects ", w_shape[1]);
  Geometry g;
  g.src = Dims(x_shape.begin(), x_shape.end());
  g.weights = Dims(w_shape.begin(), w_shape.end());
  g.bias = {w_shape[0]};
  const int64_t extent_h = (w_shape[2] - 1) * dilations[0] + 1;
  const int64_t extent_w = (w_shape[3] - 1) * dilations[1] + 1;
  const int64_t oh = (x_shape[2] + paddings[0] + paddings[1] - extent_h) / strides[0] + 1;
  const int64_t ow = (x_shape[3] + paddings[2] + paddings[3] - extent_w) / strides[1] + 1;
  PD_CHECK(oh > 0 && ow > 0, "fastconv: the kernel does not fit the padded input");
  g.dst = {x_shape[0], w_shape[0], oh, ow};
  g.strides = {strides[0], strides[1]};
  g.dilates = {dilations[0] - 1, dilations[1] - 1};  // oneDNN counts the gaps
  g.pad_l = {paddings[0], paddings[2]};
  g.pad_r = {paddings[1], paddings[3]};
  g.threads = omp_get_max_threads();  // primitives are built for the team they run with
  g.bf16 = bf16;
  return g;
}

memory::desc any_desc(const Dims& dims) { return memory::desc(dims, memory::data_type::f32, Tag::any); }
// The operands the convolution reads: bfloat16 in bf16 mode.
memory::desc input_desc(const Geometry& g, const Dims& dims) {
  return memory::desc(dims, g.bf16 ? memory::data_type::bf16 : memory::data_type::f32, Tag::any);
}
memory::desc plain_desc(const Dims& dims) {
  return memory::desc(dims, memory::data_type::f32, dims.size() == 4 ? Tag::abcd : Tag::a);
}

// The primitives of one convolution; the backward ones are built on first use.
struct Primitives {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  std::once_flag bwd_data_once, bwd_weights_once;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights_pd;
  dnnl::convolution_backward_weights bwd_weights;

  explicit Primitives(const Geometry& g) {
    auto& engine = cpu_engine();
    fwd_pd = dnnl::convolution_forward::primitive_desc(
        engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, input_desc(g, g.src),
        input_desc(g, g.weights), any_desc(g.bias), any_desc(g.dst), g.strides, g.dilates, g.pad_l, g.pad_r);
    fwd = dnnl::convolution_forward(fwd_pd);
  }

  void need_backward_data(const Geometry& g) {
    std::call_once(bwd_data_once, [&] {
      bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
          cpu_engine(), dnnl::algorithm::convolution_direct, any_desc(g.src), input_desc(g, g.weights),
          input_desc(g, g.dst), g.strides, g.dilates, g.pad_l, g.pad_r, fwd_pd);
      bwd_data = dnnl::convolution_backward_data(bwd_data_pd);
    });
  }

  void need_backward_weights(const Geometry& g) {
    std::call_once(bwd_weights_once, [&] {
      bwd_weights_pd = dnnl::convolution_backward_weights::primitive_desc(
          cpu_engine(), dnnl::algorithm::convolution_direct, input_desc(g, g.src), any_desc(g.weights),
          any_desc(g.bias), input_desc(g, g.dst), g.strides, g.dilates, g.pad_l, g.pad_r, fwd_pd);
      bwd_weights = dnnl::convolution_backward_weights(bwd_weights_pd);
    });
  }
};

std::shared_ptr<Primitives> primitives_for(const Geometry& g) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<Primitives>> cache;
  const std::string key = g.key();
  std::lock_guard<std::mutex> lock(mutex);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  auto made = std::make_shared<Primitives>(g);
  cache.emplace(key, made);
  return made;
}

// `user` (a Paddle buffer in plain layout) as a memory of layout `want`: the buffer itself when the
// layouts agree, else a reordered copy.
memory as_layout(const memory::desc& want, memory user, dnnl::stream& stream) {
  if (want == user.get_desc()) return user;
  memory converted(want, cpu_engine());
  dnnl::reorder(user, converted).execute(stream, user, converted);
  return converted;
}

// A memory of layout `want` to compute into, and the reorder of it into `user` when they differ.
memory output_in(const memory::desc& want, const memory& user) {
  return want == user.get_desc() ? user : memory(want, cpu_engine());
}
void copy_back(memory computed, memory user, dnnl::stream& stream) {
  if (computed.get(true) != user.get(true)) dnnl::reorder(computed, user).execute(stream, computed, user);
}

memory user_memory(const Dims& dims, const paddle::Tensor& t) {
  return memory(plain_desc(dims), cpu_engine(), const_cast<float*>(t.data<float>()));
}

void check_input(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), "fastconv: ", name, " must be a CPU tensor");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, "fastconv: ", name, " must be float32");
}

paddle::Tensor contiguous(const paddle::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

template <typename Body>
void guarded(const char* op, Body body) {
  try {
    body();
  } catch (const dnnl::error& e) {
    PD_THROW("fastconv: oneDNN failed in ", op, ": ", e.what(), " (status ", static_cast<int>(e.status), ")");
  }
}

// The weight gradient sums over the batch and the output positions. oneDNN accumulates that sum in
// float32 in one pass, so its rounding error grows with its length (N * OH * OW): over conv1 of
// AlexNet at batch 128 (131,072 terms) it reaches ~1e-5 of the largest value, ten times Paddle's.
// The batch is therefore cut into chunks of at most kMaxAccumulation terms each, computed one after
// the other and added up, which keeps the error near Paddle's at any batch size.
constexpr int64_t kMaxAccumulation = 16384;

// Images per chunk: the batch split into equal chunks (the last one may be shorter).
int64_t weight_grad_chunk(const Geometry& g) {
  const int64_t batch = g.src[0], per_image = g.dst[2] * g.dst[3];
  const int64_t needed = (batch * per_image + kMaxAccumulation - 1) / kMaxAccumulation;
  const int64_t chunks = std::min(batch, std::max<int64_t>(1, needed));
  return (batch + chunks - 1) / chunks;
}

// g with a batch of n images.
Geometry with_batch(Geometry g, int64_t n) {
  g.src[0] = n;
  g.dst[0] = n;
  return g;
}

// dw, dbias of one batch (or chunk) into the plain buffers dw_user, db_user; `diff_dst_as` gives dy
// in a wanted layout.
template <typename DiffDst>
void weight_grad_pass(Primitives& p, const memory& x_user, const memory& dw_user, const memory& db_user,
                      dnnl::stream& stream, DiffDst diff_dst_as) {
  memory src = as_layout(p.bwd_weights_pd.src_desc(), x_user, stream);
  memory diff_weights = output_in(p.bwd_weights_pd.diff_weights_desc(), dw_user);
  memory diff_bias = output_in(p.bwd_weights_pd.diff_bias_desc(), db_user);
  p.bwd_weights.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst_as(p.bwd_weights_pd.diff_dst_desc())},
                                 {DNNL_ARG_DIFF_WEIGHTS, diff_weights}, {DNNL_ARG_DIFF_BIAS, diff_bias}});
  copy_back(diff_weights, dw_user, stream);
  copy_back(diff_bias, db_user, stream);
}

void weight_grad_in_chunks(const Geometry& g, const paddle::Tensor& x, const paddle::Tensor& dy, paddle::Tensor& dw,
                           paddle::Tensor& dbias, dnnl::stream& stream) {
  const int64_t batch = g.src[0], chunk = weight_grad_chunk(g);
  const int64_t x_image = g.src[1] * g.src[2] * g.src[3], dy_image = g.dst[1] * g.dst[2] * g.dst[3];
  const int64_t w_size = dw.numel(), b_size = dbias.numel();
  std::vector<float> part_w(w_size), part_b(b_size);
  float* total_w = dw.data<float>();
  float* total_b = dbias.data<float>();
  for (int64_t n0 = 0; n0 < batch; n0 += chunk) {
    const int64_t n = std::min(chunk, batch - n0);
    const Geometry gc = with_batch(g, n);
    auto p = primitives_for(gc);
    p->need_backward_weights(gc);
    const memory x_user(plain_desc(gc.src), cpu_engine(), const_cast<float*>(x.data<float>()) + n0 * x_image);
    const memory dy_user(plain_desc(gc.dst), cpu_engine(), const_cast<float*>(dy.data<float>()) + n0 * dy_image);
    const bool first = n0 == 0;
    const memory dw_out(plain_desc(g.weights), cpu_engine(), first ? total_w : part_w.data());
    const memory db_out(plain_desc(g.bias), cpu_engine(), first ? total_b : part_b.data());
    weight_grad_pass(*p, x_user, dw_out, db_out, stream,
                     [&](const memory::desc& want) { return as_layout(want, dy_user, stream); });
    stream.wait();
    if (!first) {
      for (int64_t i = 0; i < w_size; ++i) total_w[i] += part_w[i];
      for (int64_t i = 0; i < b_size; ++i) total_b[i] += part_b[i];
    }
  }
}

}  // namespace

std::vector<paddle::Tensor> FastConvForward(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                            const paddle::Tensor& bias_in, const std::vector<int>& strides,
                                            const std::vector<int>& paddings, const std::vector<int>& dilations,
                                            bool need_x_grad, bool need_weight_grad, bool bf16) {
  check_input(x_in, "x");
  check_input(w_in, "w");
  check_input(bias_in, "bias");
  const auto x = contiguous(x_in), w = contiguous(w_in), bias = contiguous(bias_in);
  const Geometry g = make_geometry(x.shape(), w.shape(), strides, paddings, dilations, bf16);
  PD_CHECK(bias.numel() == g.bias[0], "fastconv: bias must hold one value per output channel");
  auto y = paddle::empty(std::vector<int64_t>(g.dst.begin(), g.dst.end()), x.dtype(), x.place());
  if (y.numel() == 0) return {y};
  guarded("forward", [&] {
    auto p = primitives_for(g);
    dnnl::stream stream(cpu_engine());
    const memory y_user = user_memory(g.dst, y);
    memory src = as_layout(p->fwd_pd.src_desc(), user_memory(g.src, x), stream);
    memory weights = as_layout(p->fwd_pd.weights_desc(), user_memory(g.weights, w), stream);
    memory b = as_layout(p->fwd_pd.bias_desc(), user_memory(g.bias, bias), stream);
    memory dst = output_in(p->fwd_pd.dst_desc(), y_user);
    p->fwd.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}});
    copy_back(dst, y_user, stream);
    stream.wait();
  });
  return {y};
}

std::vector<paddle::Tensor> FastConvBackward(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                             const paddle::Tensor& dy_in, const std::vector<int>& strides,
                                             const std::vector<int>& paddings, const std::vector<int>& dilations,
                                             bool need_x_grad, bool need_weight_grad, bool bf16) {
  const auto x = contiguous(x_in), w = contiguous(w_in), dy = contiguous(dy_in);
  check_input(dy, "dy");
  const Geometry g = make_geometry(x.shape(), w.shape(), strides, paddings, dilations, bf16);
  PD_CHECK(dy.shape() == std::vector<int64_t>(g.dst.begin(), g.dst.end()), "fastconv: dy has the wrong shape");
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), x.dtype(), x.place());
  auto dbias = paddle::empty({g.bias[0]}, x.dtype(), x.place());
  if (dy.numel() == 0) {  // an empty batch: nothing flows back
    return {paddle::full(x.shape(), 0.0, x.dtype(), x.place()), paddle::full(w.shape(), 0.0, x.dtype(), x.place()),
            paddle::full({g.bias[0]}, 0.0, x.dtype(), x.place())};
  }
  guarded("backward", [&] {
    auto p = primitives_for(g);
    dnnl::stream stream(cpu_engine());
    const memory dy_user = user_memory(g.dst, dy);
    memory diff_dst;  // dy in the layout of the primitive that read it last: shared when both want the same
    auto diff_dst_as = [&](const memory::desc& want) {
      if (!diff_dst || diff_dst.get_desc() != want) diff_dst = as_layout(want, dy_user, stream);
      return diff_dst;
    };
    if (need_x_grad) {
      p->need_backward_data(g);
      const memory dx_user = user_memory(g.src, dx);
      memory weights = as_layout(p->bwd_data_pd.weights_desc(), user_memory(g.weights, w), stream);
      memory diff_src = output_in(p->bwd_data_pd.diff_src_desc(), dx_user);
      p->bwd_data.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst_as(p->bwd_data_pd.diff_dst_desc())},
                                   {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DIFF_SRC, diff_src}});
      copy_back(diff_src, dx_user, stream);
    }
    if (need_weight_grad) {
      if (weight_grad_chunk(g) == g.src[0]) {  // one pass: dy's reordered copy is shared with backward-data
        p->need_backward_weights(g);
        weight_grad_pass(*p, user_memory(g.src, x), user_memory(g.weights, dw), user_memory(g.bias, dbias), stream,
                         diff_dst_as);
      } else {
        weight_grad_in_chunks(g, x, dy, dw, dbias, stream);
      }
    }
    stream.wait();
  });
  return {dx, dw, dbias};
}

std::vector<std::vector<int64_t>> FastConvInferShape(const std::vector<int64_t>& x_shape,
                                                     const std::vector<int64_t>& w_shape,
                                                     const std::vector<int64_t>& bias_shape,
                                                     const std::vector<int>& strides, const std::vector<int>& paddings,
                                                     const std::vector<int>& dilations, bool, bool, bool bf16) {
  const Geometry g = make_geometry(x_shape, w_shape, strides, paddings, dilations, bf16);
  return {std::vector<int64_t>(g.dst.begin(), g.dst.end())};
}

std::vector<paddle::DataType> FastConvInferDtype(const paddle::DataType& x, const paddle::DataType&,
                                                 const paddle::DataType&) {
  return {x};
}

#define FASTCONV_ATTRS                                                                                      \
  {"strides: std::vector<int>", "paddings: std::vector<int>", "dilations: std::vector<int>", \
   "need_x_grad: bool", "need_weight_grad: bool", "bf16: bool"}

PD_BUILD_OP(fastconv)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Out"})
    .Attrs(FASTCONV_ATTRS)
    .SetKernelFn(PD_KERNEL(FastConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FastConvInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FastConvInferDtype));

PD_BUILD_GRAD_OP(fastconv)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("Bias")})
    .Attrs(FASTCONV_ATTRS)
    .SetKernelFn(PD_KERNEL(FastConvBackward));
