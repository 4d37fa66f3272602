// The stem's full convolution for CPU, float32: an NCHW image batch with few channels (RGB) in, weight
// [Co, Ci, K, K], no bias, and the output channels-last (NHWC), with the weight gradient only.
//
// Why a kernel of our own: with three input channels paddle's CPU conv2d runs an im2col GEMM whose inner
// dimension is 27, far from its GEMM speed, and the channels-last path then needs a transpose of the stem's
// output (and of its gradient) before the first block (docs/performance.md). Here each output pixel is
// Ci*K*K broadcast multiply-adds across its output channels, written straight in NHWC. The input of a stem is
// the image batch, which needs no gradient: the backward pass computes the weight gradient only, and callers
// (models/layers.py) take this operator only for inputs that do not require a gradient.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "paddle/extension.h"

namespace {

struct StemGeometry {
  int N, Ci, H, W, Co, K, Ho, Wo, s, p;
  int strip_w;  // columns of one input row that the output row reads, from column -p on
  int taps() const { return Ci * K * K; }
  int strip_size() const { return Ci * K * strip_w; }
};

StemGeometry stem_geometry(const paddle::Tensor& x, const paddle::Tensor& w, int stride, int padding) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "mbnet stem_conv2d_nhwc runs on CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           "mbnet stem_conv2d_nhwc supports float32 only");
  auto xs = x.shape();
  auto ws = w.shape();
  PD_CHECK(xs.size() == 4 && ws.size() == 4, "input must be NCHW and weight [Co, Ci, K, K]");
  PD_CHECK(ws[1] == xs[1] && ws[2] == ws[3], "weight must be [Co, Ci, K, K] with Ci = input channels");
  PD_CHECK(stride >= 1 && padding >= 0, "stride must be >= 1 and padding >= 0");
  PD_CHECK(ws[0] >= 1 && ws[2] >= 1 && xs[1] >= 1, "mbnet stem_conv2d_nhwc: empty weight or input channels");
  // Checked before the division below, which truncates towards zero and would give one output row.
  PD_CHECK(xs[2] + 2 * padding >= ws[2] && xs[3] + 2 * padding >= ws[2], "input is smaller than the kernel");
  StemGeometry g;
  g.N = xs[0]; g.Ci = xs[1]; g.H = xs[2]; g.W = xs[3]; g.Co = ws[0]; g.K = ws[2];
  g.s = stride; g.p = padding;
  g.Ho = (g.H + 2 * padding - g.K) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.K) / stride + 1;
  g.strip_w = (g.Wo - 1) * stride + g.K;
  return g;
}

// Sixteen floats in GCC/Clang's portable vector extension: one AVX-512 register, two AVX2 ones.
typedef float v16f __attribute__((vector_size(64)));
constexpr int kVec = 16;
constexpr int kPixels = 4;  // output pixels per pass of the forward: each weight vector loaded serves four

inline v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store16(float* p, v16f v) { std::memcpy(p, &v, sizeof(v)); }

// wt[t * Co + co] = weight of output channel co at tap t = (ci * K + kh) * K + kw.
std::vector<float> taps_major(const float* wp, const StemGeometry& g) {
  const int taps = g.taps();
  std::vector<float> wt(static_cast<size_t>(taps) * g.Co);
  for (int co = 0; co < g.Co; ++co)
    for (int t = 0; t < taps; ++t) wt[static_cast<size_t>(t) * g.Co + co] = wp[static_cast<size_t>(co) * taps + t];
  return wt;
}

// The K input rows of every channel that output row oh of sample n reads, copied with zeros where the rows or
// columns fall outside the image: strip[(ci * K + kh) * strip_w + col] for input column col - p. The copy
// makes every tap of every pixel of the row a plain read at offset(tap) + ow * s.
void fill_strip(const float* x, const StemGeometry& g, int n, int oh, float* strip) {
  std::fill(strip, strip + g.strip_size(), 0.f);
  for (int ci = 0; ci < g.Ci; ++ci)
    for (int kh = 0; kh < g.K; ++kh) {
      const int ih = oh * g.s - g.p + kh;
      if (ih < 0 || ih >= g.H) continue;
      const float* row = x + ((static_cast<long>(n) * g.Ci + ci) * g.H + ih) * g.W;
      float* dst = strip + (ci * g.K + kh) * g.strip_w;
      const int inside_end = std::min(g.strip_w, g.W + g.p);  // strip columns p.. lie inside the image
      for (int col = g.p; col < inside_end; ++col) dst[col] = row[col - g.p];
    }
}

// Offsets in the strip of each tap, for output column 0.
std::vector<int> tap_offsets(const StemGeometry& g) {
  std::vector<int> off(g.taps());
  for (int ci = 0; ci < g.Ci; ++ci)
    for (int kh = 0; kh < g.K; ++kh)
      for (int kw = 0; kw < g.K; ++kw) off[(ci * g.K + kh) * g.K + kw] = (ci * g.K + kh) * g.strip_w + kw;
  return off;
}

// One output row: out[ow][co] = sum over taps t of wt[t][co] * strip[off[t] + ow * s].
void forward_row(const float* strip, const float* wt, const int* off, float* out, const StemGeometry& g) {
  const int taps = g.taps(), Co = g.Co, s = g.s;
  int ow = 0;
  for (; ow + kPixels <= g.Wo; ow += kPixels) {
    for (int cb = 0; cb + kVec <= Co; cb += kVec) {
      v16f acc[kPixels] = {};
      for (int t = 0; t < taps; ++t) {
        const v16f wv = load16(wt + static_cast<long>(t) * Co + cb);
        const float* in = strip + off[t] + ow * s;
#pragma GCC unroll 4
        for (int j = 0; j < kPixels; ++j) acc[j] += wv * in[j * s];
      }
#pragma GCC unroll 4
      for (int j = 0; j < kPixels; ++j) store16(out + static_cast<long>(ow + j) * Co + cb, acc[j]);
    }
  }
  // the pixels past the last multiple of four, and the channels past the last multiple of 16 of every pixel
  for (int px = 0; px < g.Wo; ++px) {
    const int first = px < ow ? Co / kVec * kVec : 0;
    for (int co = first; co < Co; ++co) {
      float acc = 0.f;
      for (int t = 0; t < taps; ++t) acc += wt[static_cast<long>(t) * Co + co] * strip[off[t] + px * s];
      out[static_cast<long>(px) * Co + co] = acc;
    }
  }
}

void forward(const float* xp, const float* wp, float* yp, const StemGeometry& g) {
  const std::vector<float> wt = taps_major(wp, g);
  const std::vector<int> off = tap_offsets(g);
  const long rows = static_cast<long>(g.N) * g.Ho;
#pragma omp parallel
  {
    std::vector<float> strip(g.strip_size());
#pragma omp for schedule(static)
    for (long r = 0; r < rows; ++r) {
      fill_strip(xp, g, static_cast<int>(r / g.Ho), static_cast<int>(r % g.Ho), strip.data());
      forward_row(strip.data(), wt.data(), off.data(), yp + r * g.Wo * g.Co, g);
    }
  }
}

// One output row's share of the weight gradient, added to gw[t][co]: for 16 output channels and one tap at a
// time the sum over the row's pixels stays in a register; the row's gradient (Wo * Co floats) stays in cache.
void weight_grad_row(const float* strip, const float* gy_row, const int* off, float* gw, const StemGeometry& g) {
  const int taps = g.taps(), Co = g.Co, s = g.s;
  int cb = 0;
  for (; cb + kVec <= Co; cb += kVec)
    for (int t = 0; t < taps; ++t) {
      v16f acc = {};
      const float* in = strip + off[t];
      for (int ow = 0; ow < g.Wo; ++ow) acc += load16(gy_row + static_cast<long>(ow) * Co + cb) * in[ow * s];
      float* sum = gw + static_cast<long>(t) * Co + cb;
      store16(sum, load16(sum) + acc);
    }
  for (int co = cb; co < Co; ++co)  // channels past the last multiple of 16
    for (int t = 0; t < taps; ++t) {
      float acc = 0.f;
      for (int ow = 0; ow < g.Wo; ++ow) acc += gy_row[static_cast<long>(ow) * Co + co] * strip[off[t] + ow * s];
      gw[static_cast<long>(t) * Co + co] += acc;
    }
}

// Samples are spread over the threads; each sums a sample's rows in float and the samples in double.
void weight_grad(const float* xp, const float* gyp, float* gwp, const StemGeometry& g) {
  const int taps = g.taps();
  const size_t size = static_cast<size_t>(taps) * g.Co;
  const std::vector<int> off = tap_offsets(g);
  std::vector<double> totals(static_cast<size_t>(omp_get_max_threads()) * size, 0.0);
#pragma omp parallel
  {
    std::vector<float> strip(g.strip_size()), sample(size);
    double* mine = totals.data() + static_cast<size_t>(omp_get_thread_num()) * size;
#pragma omp for schedule(static)
    for (int n = 0; n < g.N; ++n) {
      std::fill(sample.begin(), sample.end(), 0.f);
      for (int oh = 0; oh < g.Ho; ++oh) {
        fill_strip(xp, g, n, oh, strip.data());
        const float* gy_row = gyp + (static_cast<long>(n) * g.Ho + oh) * g.Wo * g.Co;
        weight_grad_row(strip.data(), gy_row, off.data(), sample.data(), g);
      }
      for (size_t i = 0; i < size; ++i) mine[i] += sample[i];
    }
  }
  const int threads = static_cast<int>(totals.size() / size);
  for (int co = 0; co < g.Co; ++co)
    for (int t = 0; t < taps; ++t) {
      double sum = 0.0;
      for (int th = 0; th < threads; ++th) sum += totals[th * size + static_cast<size_t>(t) * g.Co + co];
      gwp[static_cast<size_t>(co) * taps + t] = static_cast<float>(sum);
    }
}

}  // namespace

std::vector<paddle::Tensor> StemNhwcForward(const paddle::Tensor& x_in, const paddle::Tensor& w_in, int stride,
                                            int padding) {
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const StemGeometry g = stem_geometry(x, w, stride, padding);
  auto out = paddle::empty({g.N, g.Ho, g.Wo, g.Co}, paddle::DataType::FLOAT32, x.place());
  forward(x.data<float>(), w.data<float>(), out.data<float>(), g);
  return {out};
}

std::vector<paddle::Tensor> StemNhwcBackward(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                             const paddle::Tensor& grad_in, int stride, int padding) {
  const auto x = x_in.contiguous();
  const auto grad_out = grad_in.contiguous();
  const StemGeometry g = stem_geometry(x, w_in, stride, padding);
  auto gw = paddle::empty({g.Co, g.Ci, g.K, g.K}, paddle::DataType::FLOAT32, x.place());
  weight_grad(x.data<float>(), grad_out.data<float>(), gw.data<float>(), g);
  return {gw};
}

std::vector<std::vector<int64_t>> StemNhwcInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                     const int& stride, const int& padding) {
  auto out = [&](int64_t v) { return v < 0 ? v : (v + 2 * padding - w[2]) / stride + 1; };
  return {{x[0], out(x[2]), out(x[3]), w[0]}};
}

std::vector<paddle::DataType> StemNhwcInferDtype(const paddle::DataType& x, const paddle::DataType& w) {
  return {x};
}

PD_BUILD_OP(mbnet_stem_conv2d_nhwc)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(StemNhwcForward))
    .SetInferShapeFn(PD_INFER_SHAPE(StemNhwcInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(StemNhwcInferDtype));

// No gradient for X: see the header.
PD_BUILD_GRAD_OP(mbnet_stem_conv2d_nhwc)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("W")})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(StemNhwcBackward));
