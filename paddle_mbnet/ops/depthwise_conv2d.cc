// Depthwise 2-D convolution for CPU, float32, NCHW, weight [C, 1, K, K], no bias.
//
// Why: paddle's CPU depthwise_conv2d runs one tiny GEMM per (sample, channel)
// and takes ~90 % of a MobileNet training step. Here every (sample, channel)
// plane is a direct convolution whose innermost loop runs along a row of the
// output with the bounds precomputed, so it has no branches and the compiler
// vectorizes it; OpenMP spreads the planes (forward) or channels (backward)
// over the cores.
#include <algorithm>
#include <cstring>
#include <vector>

#include "paddle/extension.h"

namespace {

// Output columns ow whose input column ow * s - p + kw lies inside [0, W).
inline void valid_cols(int W, int Wo, int s, int p, int kw, int* lo, int* hi) {
  int first = p - kw;  // ow * s >= first
  *lo = first > 0 ? (first + s - 1) / s : 0;
  int last = W - 1 + p - kw;  // ow * s <= last
  *hi = last < 0 ? 0 : std::min(Wo, last / s + 1);
  if (*hi < *lo) *hi = *lo;
}

struct Geometry {
  int N, C, H, W, K, Ho, Wo, s, p;
};

Geometry geometry(const paddle::Tensor& x, const paddle::Tensor& w, int stride, int padding) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "mbnet depthwise_conv2d runs on CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           "mbnet depthwise_conv2d supports float32 only");
  auto xs = x.shape();
  auto ws = w.shape();
  PD_CHECK(xs.size() == 4 && ws.size() == 4, "input must be NCHW and weight [C, 1, K, K]");
  PD_CHECK(ws[0] == xs[1] && ws[1] == 1 && ws[2] == ws[3], "weight must be [C, 1, K, K] with C = input channels");
  PD_CHECK(stride >= 1 && padding >= 0, "stride must be >= 1 and padding >= 0");
  Geometry g;
  g.N = xs[0]; g.C = xs[1]; g.H = xs[2]; g.W = xs[3]; g.K = ws[2];
  g.s = stride; g.p = padding;
  g.Ho = (g.H + 2 * padding - g.K) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.K) / stride + 1;
  PD_CHECK(g.Ho > 0 && g.Wo > 0, "input is smaller than the kernel");
  return g;
}

void forward_plane(const float* __restrict__ in, const float* __restrict__ w, float* __restrict__ out,
                   const Geometry& g) {
  std::memset(out, 0, sizeof(float) * g.Ho * g.Wo);
  for (int oh = 0; oh < g.Ho; ++oh) {
    float* __restrict__ orow = out + oh * g.Wo;
    for (int kh = 0; kh < g.K; ++kh) {
      const int ih = oh * g.s - g.p + kh;
      if (ih < 0 || ih >= g.H) continue;
      for (int kw = 0; kw < g.K; ++kw) {
        const float wv = w[kh * g.K + kw];
        int lo, hi;
        valid_cols(g.W, g.Wo, g.s, g.p, kw, &lo, &hi);
        const float* __restrict__ ip = in + ih * g.W - g.p + kw;
        if (g.s == 1) {
#pragma omp simd
          for (int ow = lo; ow < hi; ++ow) orow[ow] += wv * ip[ow];
        } else {
          const int s = g.s;
#pragma omp simd
          for (int ow = lo; ow < hi; ++ow) orow[ow] += wv * ip[ow * s];
        }
      }
    }
  }
}

// One (sample, channel) plane of the backward pass: adds this plane's share of
// the weight gradient to gw_acc and writes the input gradient plane gx.
void backward_plane(const float* __restrict__ in, const float* __restrict__ w, const float* __restrict__ gy,
                    float* __restrict__ gx, double* __restrict__ gw_acc, const Geometry& g) {
  std::memset(gx, 0, sizeof(float) * g.H * g.W);
  for (int oh = 0; oh < g.Ho; ++oh) {
    const float* __restrict__ grow = gy + oh * g.Wo;
    for (int kh = 0; kh < g.K; ++kh) {
      const int ih = oh * g.s - g.p + kh;
      if (ih < 0 || ih >= g.H) continue;
      for (int kw = 0; kw < g.K; ++kw) {
        const float wv = w[kh * g.K + kw];
        int lo, hi;
        valid_cols(g.W, g.Wo, g.s, g.p, kw, &lo, &hi);
        const float* __restrict__ ip = in + ih * g.W - g.p + kw;
        float* __restrict__ gp = gx + ih * g.W - g.p + kw;
        float acc = 0.f;
        if (g.s == 1) {
#pragma omp simd reduction(+ : acc)
          for (int ow = lo; ow < hi; ++ow) {
            gp[ow] += wv * grow[ow];
            acc += grow[ow] * ip[ow];
          }
        } else {
          const int s = g.s;
#pragma omp simd reduction(+ : acc)
          for (int ow = lo; ow < hi; ++ow) {
            gp[ow * s] += wv * grow[ow];
            acc += grow[ow] * ip[ow * s];
          }
        }
        gw_acc[kh * g.K + kw] += acc;
      }
    }
  }
}

}  // namespace

std::vector<paddle::Tensor> DepthwiseForward(const paddle::Tensor& x_in, const paddle::Tensor& w_in, int stride,
                                             int padding) {
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const Geometry g = geometry(x, w, stride, padding);
  auto out = paddle::empty({g.N, g.C, g.Ho, g.Wo}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* op = out.data<float>();
  const long planes = static_cast<long>(g.N) * g.C;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < planes; ++i) {
    const int c = static_cast<int>(i % g.C);
    forward_plane(xp + i * g.H * g.W, wp + c * g.K * g.K, op + i * g.Ho * g.Wo, g);
  }
  return {out};
}

std::vector<paddle::Tensor> DepthwiseBackward(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                              const paddle::Tensor& grad_in, int stride, int padding) {
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const auto grad_out = grad_in.contiguous();
  const Geometry g = geometry(x, w, stride, padding);
  auto gx = paddle::empty({g.N, g.C, g.H, g.W}, paddle::DataType::FLOAT32, x.place());
  auto gw = paddle::empty({g.C, 1, g.K, g.K}, paddle::DataType::FLOAT32, x.place());
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* gyp = grad_out.data<float>();
  float* gxp = gx.data<float>();
  float* gwp = gw.data<float>();
  const int KK = g.K * g.K;
  // Parallel over channels: each thread owns whole channels, so the weight
  // gradient needs no atomics; double accumulators keep the sum over
  // N * Ho * Wo terms accurate.
#pragma omp parallel for schedule(static)
  for (int c = 0; c < g.C; ++c) {
    std::vector<double> acc(KK, 0.0);
    for (int n = 0; n < g.N; ++n) {
      const long i = static_cast<long>(n) * g.C + c;
      backward_plane(xp + i * g.H * g.W, wp + c * KK, gyp + i * g.Ho * g.Wo, gxp + i * g.H * g.W, acc.data(), g);
    }
    for (int k = 0; k < KK; ++k) gwp[c * KK + k] = static_cast<float>(acc[k]);
  }
  return {gx, gw};
}

std::vector<std::vector<int64_t>> DepthwiseInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                      const int& stride, const int& padding) {
  auto out = [&](int64_t v) { return v < 0 ? v : (v + 2 * padding - w[2]) / stride + 1; };
  return {{x[0], x[1], out(x[2]), out(x[3])}};
}

std::vector<paddle::DataType> DepthwiseInferDtype(const paddle::DataType& x, const paddle::DataType& w) {
  return {x};
}

PD_BUILD_OP(mbnet_depthwise_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(DepthwiseForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DepthwiseInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DepthwiseInferDtype));

PD_BUILD_GRAD_OP(mbnet_depthwise_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(DepthwiseBackward));
