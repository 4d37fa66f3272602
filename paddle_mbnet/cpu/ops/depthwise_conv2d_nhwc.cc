// Depthwise 2-D convolution for CPU, float32, channels-last (NHWC) input, weight [C, 1, K, K], no bias.
//
// Why a second kernel: the network's channels-last path (models/layers.py) keeps activations NHWC from the stem to
// the pool, so 1x1 convolutions are single GEMMs with no transposes around them. In NHWC the channels of a pixel
// are already contiguous, so each kernel tap is a vector multiply-add across 16 channels read straight from the
// tensor: no interleaved copy as in the NCHW kernel, and borders are handled by clipping the tap range of the
// pixels next to them. The weight is repacked tap-major ([K*K][C]) so a tap's channels are contiguous too.
// The backward pass spreads samples over the cores; it gathers the input gradient per input pixel and keeps
// each tap's weight-gradient sum in a register.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "paddle/extension.h"

namespace {

struct Geometry {
  int N, H, W, C, K, Ho, Wo, s, p;
};

constexpr int kMaxK = 16;  // the largest kernel side: sizes the per-pixel tap lists of the input gradient

Geometry geometry(const paddle::Tensor& x, const paddle::Tensor& w, int stride, int padding) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "mbnet depthwise_conv2d_nhwc runs on CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           "mbnet depthwise_conv2d_nhwc supports float32 only");
  auto xs = x.shape();
  auto ws = w.shape();
  PD_CHECK(xs.size() == 4 && ws.size() == 4, "input must be NHWC and weight [C, 1, K, K]");
  PD_CHECK(ws[0] == xs[3] && ws[1] == 1 && ws[2] == ws[3], "weight must be [C, 1, K, K] with C = input channels");
  PD_CHECK(stride >= 1 && padding >= 0, "stride must be >= 1 and padding >= 0");
  PD_CHECK(ws[2] >= 1 && ws[2] <= kMaxK && xs[3] >= 1,
           "mbnet depthwise_conv2d_nhwc: kernels of 1 to 16 taps a side, and at least one channel");
  // Checked before the division below, which truncates towards zero and would give one output row.
  PD_CHECK(xs[1] + 2 * padding >= ws[2] && xs[2] + 2 * padding >= ws[2], "input is smaller than the kernel");
  Geometry g;
  g.N = xs[0]; g.H = xs[1]; g.W = xs[2]; g.C = xs[3]; g.K = ws[2];
  g.s = stride; g.p = padding;
  g.Ho = (g.H + 2 * padding - g.K) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.K) / stride + 1;
  return g;
}

// Sixteen floats in GCC/Clang's portable vector extension: one AVX-512 register, two AVX2 ones.
typedef float v16f __attribute__((vector_size(64)));
constexpr int kVec = 16;

inline v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store16(float* p, v16f v) { std::memcpy(p, &v, sizeof(v)); }

// wt[t * C + c] = tap t of channel c.
std::vector<float> taps_major(const float* wp, const Geometry& g) {
  const int KK = g.K * g.K;
  std::vector<float> wt(static_cast<size_t>(KK) * g.C);
  for (int ch = 0; ch < g.C; ++ch)
    for (int t = 0; t < KK; ++t) wt[static_cast<size_t>(t) * g.C + ch] = wp[ch * KK + t];
  return wt;
}

// The taps [k0, k1) of one axis that land inside the input for an output at `o` (input start o * s - p).
struct TapRange {
  int k0, k1, start;
};

inline TapRange taps_at(int o, int s, int p, int K, int size) {
  const int start = o * s - p;
  return {std::max(0, -start), std::min(K, size - start), start};
}

// One output pixel: out[c] = sum over the valid taps of wt[tap][c] * x[input pixel of the tap][c].
void forward_pixel(const float* x, const float* wt, float* out, const Geometry& g, TapRange rh, TapRange rw) {
  const int C = g.C;
  int ch = 0;
  for (; ch + kVec <= C; ch += kVec) {
    v16f acc = {};
    for (int kh = rh.k0; kh < rh.k1; ++kh) {
      // pointers at the first valid tap: the pixel left of a left border lies before the tensor
      const float* row = x + (static_cast<long>(rh.start + kh) * g.W + rw.start + rw.k0) * C + ch;
      const float* wrow = wt + (kh * g.K + rw.k0) * C + ch;
      for (int kw = 0; kw < rw.k1 - rw.k0; ++kw)
        acc += load16(wrow + kw * C) * load16(row + static_cast<long>(kw) * C);
    }
    store16(out + ch, acc);
  }
  for (; ch < C; ++ch) {  // channels past the last multiple of 16
    float acc = 0.f;
    for (int kh = rh.k0; kh < rh.k1; ++kh)
      for (int kw = rw.k0; kw < rw.k1; ++kw)
        acc += wt[(kh * g.K + kw) * C + ch] * x[(static_cast<long>(rh.start + kh) * g.W + rw.start + kw) * C + ch];
    out[ch] = acc;
  }
}

void forward(const float* xp, const float* wp, float* yp, const Geometry& g) {
  const std::vector<float> wt = taps_major(wp, g);
  const long rows = static_cast<long>(g.N) * g.Ho;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; ++r) {
    const int n = static_cast<int>(r / g.Ho), oh = static_cast<int>(r % g.Ho);
    const float* x = xp + static_cast<long>(n) * g.H * g.W * g.C;
    const TapRange rh = taps_at(oh, g.s, g.p, g.K, g.H);
    float* out = yp + r * g.Wo * g.C;
    for (int ow = 0; ow < g.Wo; ++ow)
      forward_pixel(x, wt.data(), out + static_cast<long>(ow) * g.C, g, rh, taps_at(ow, g.s, g.p, g.K, g.W));
  }
}

// The taps of one axis that reach input position i from an existing output position: kernel index k[j] and
// output index o[j] for j < count, where o = (i + p - k) / s.
struct Contributions {
  int count = 0, k[kMaxK], o[kMaxK];
  Contributions(int i, int s, int p, int K, int out_size) {
    for (int kk = 0; kk < K; ++kk) {
      const int t = i + p - kk;
      if (t >= 0 && t % s == 0 && t / s < out_size) k[count] = kk, o[count++] = t / s;
    }
  }
};

// The input gradient of one input pixel, gathered: gx[c] = sum over the taps (kh, kw) whose output pixel
// exists of wt[tap][c] * gy[oh, ow][c]. Why gathered and not scattered from the output pixels: a scatter adds
// into each input pixel from several output pixels in turn, a chain of loads and stores to one address.
void input_grad_pixel(const float* gy, const float* wt, float* gx, const Geometry& g, const Contributions& rows,
                      const Contributions& cols) {
  const int C = g.C;
  long tap[kMaxK * kMaxK], at[kMaxK * kMaxK];  // weight and gradient offsets of the contributing taps
  int taps = 0;
  for (int i = 0; i < rows.count; ++i)
    for (int j = 0; j < cols.count; ++j, ++taps) {
      tap[taps] = static_cast<long>(rows.k[i] * g.K + cols.k[j]) * C;
      at[taps] = (static_cast<long>(rows.o[i]) * g.Wo + cols.o[j]) * C;
    }
  int ch = 0;
  for (; ch + kVec <= C; ch += kVec) {
    v16f acc = {};
    for (int t = 0; t < taps; ++t) acc += load16(wt + tap[t] + ch) * load16(gy + at[t] + ch);
    store16(gx + ch, acc);
  }
  for (; ch < C; ++ch) {  // channels past the last multiple of 16
    float acc = 0.f;
    for (int t = 0; t < taps; ++t) acc += wt[tap[t] + ch] * gy[at[t] + ch];
    gx[ch] = acc;
  }
}

// input_grad_pixel for stride 1 away from the left and right borders, where all K taps of a row contribute
// (output column ow0 - kw for tap kw): the column loop is fixed at compile time, one accumulator per column.
template <int KT>
void input_grad_pixel_s1(const float* gy, const float* wt, float* gx, const Geometry& g, const Contributions& rows,
                         int ow0) {
  const int C = g.C;
  int ch = 0;
  for (; ch + kVec <= C; ch += kVec) {
    v16f acc[KT] = {};
    for (int i = 0; i < rows.count; ++i) {
      const float* grad = gy + (static_cast<long>(rows.o[i]) * g.Wo + ow0) * C + ch;
      const float* taps = wt + rows.k[i] * KT * C + ch;
#pragma GCC unroll 16
      for (int kw = 0; kw < KT; ++kw) acc[kw] += load16(taps + kw * C) * load16(grad - static_cast<long>(kw) * C);
    }
    v16f sum = acc[0];
#pragma GCC unroll 16
    for (int kw = 1; kw < KT; ++kw) sum += acc[kw];
    store16(gx + ch, sum);
  }
  for (; ch < C; ++ch) {
    float acc = 0.f;
    for (int i = 0; i < rows.count; ++i)
      for (int kw = 0; kw < KT; ++kw)
        acc += wt[(rows.k[i] * KT + kw) * C + ch] * gy[(static_cast<long>(rows.o[i]) * g.Wo + ow0 - kw) * C + ch];
    gx[ch] = acc;
  }
}

// x of one sample copied into a zero border of p pixels, so that every tap of every output pixel reads inside.
void pad_sample(const float* x, const Geometry& g, float* padded) {
  const int Wp = g.W + 2 * g.p, C = g.C;
  std::memset(padded, 0, sizeof(float) * (g.H + 2 * g.p) * Wp * C);
  for (int h = 0; h < g.H; ++h)
    std::memcpy(padded + (static_cast<long>(h + g.p) * Wp + g.p) * C, x + static_cast<long>(h) * g.W * C,
                sizeof(float) * g.W * C);
}

// One output row's share of one sample's weight gradient, added to gw[tap][c] (float), from the sample's
// zero-padded input: for 16 channels at a time the K*K sums over the row stay in registers (K, s fixed at compile
// time), where a memory accumulator per tap would chain a load and a store per output pixel. Row by row, the
// three input rows a row reads stay in cache while all its channels are visited.
template <int KT, int ST>
void weight_grad_row(const float* padded, const float* gy, float* gw, const Geometry& g, int oh) {
  const int C = g.C, Wp = g.W + 2 * g.p;
  const float* grow = gy + static_cast<long>(oh) * g.Wo * C;
  const float* irow = padded + static_cast<long>(oh * ST) * Wp * C;
  for (int ch = 0; ch + kVec <= C; ch += kVec) {
    v16f acc[KT * KT] = {};
    for (int ow = 0; ow < g.Wo; ++ow) {
      const v16f gv = load16(grow + static_cast<long>(ow) * C + ch);
      const float* in = irow + static_cast<long>(ow * ST) * C + ch;
#pragma GCC unroll 16
      for (int kh = 0; kh < KT; ++kh)
#pragma GCC unroll 16
        for (int kw = 0; kw < KT; ++kw) acc[kh * KT + kw] += gv * load16(in + (static_cast<long>(kh) * Wp + kw) * C);
    }
#pragma GCC unroll 16
    for (int t = 0; t < KT * KT; ++t) store16(gw + t * C + ch, load16(gw + t * C + ch) + acc[t]);
  }
}

// The same for any kernel size and stride, and for the channels past the last multiple of 16: one channel at a
// time over the whole sample.
void weight_grad_scalar(const float* padded, const float* gy, float* gw, const Geometry& g, int ch) {
  const int C = g.C, Wp = g.W + 2 * g.p;
  for (int oh = 0; oh < g.Ho; ++oh)
    for (int ow = 0; ow < g.Wo; ++ow) {
      const float gv = gy[(static_cast<long>(oh) * g.Wo + ow) * C + ch];
      for (int kh = 0; kh < g.K; ++kh)
        for (int kw = 0; kw < g.K; ++kw)
          gw[(kh * g.K + kw) * C + ch] += gv * padded[(static_cast<long>(oh * g.s + kh) * Wp + ow * g.s + kw) * C + ch];
    }
}

// One sample's weight gradient, added to gw[tap][c] (float).
void weight_grad_sample(const float* padded, const float* gy, float* gw, const Geometry& g) {
  int c = 0;
  if (g.K == 3 && g.s <= 2) {
    for (int oh = 0; oh < g.Ho; ++oh) {
      if (g.s == 1) weight_grad_row<3, 1>(padded, gy, gw, g, oh);
      else weight_grad_row<3, 2>(padded, gy, gw, g, oh);
    }
    c = g.C / kVec * kVec;
  }
  for (; c < g.C; ++c) weight_grad_scalar(padded, gy, gw, g, c);
}

// One sample's input gradient, row by row.
void input_grad_sample(const float* gy, const float* wt, float* gx, const Geometry& g) {
  const bool fast = g.K == 3 && g.s == 1;
  for (int ih = 0; ih < g.H; ++ih) {
    const Contributions from_rows(ih, g.s, g.p, g.K, g.Ho);
    for (int iw = 0; iw < g.W; ++iw) {
      float* out = gx + (static_cast<long>(ih) * g.W + iw) * g.C;
      const int ow0 = iw + g.p;  // output column of tap 0 at stride 1
      if (fast && ow0 - (g.K - 1) >= 0 && ow0 < g.Wo) input_grad_pixel_s1<3>(gy, wt, out, g, from_rows, ow0);
      else input_grad_pixel(gy, wt, out, g, from_rows, Contributions(iw, g.s, g.p, g.K, g.Wo));
    }
  }
}

// Samples are spread over the threads; each sample's weight gradient and then its input gradient are computed
// back to back, so the second pass over its output gradient finds it in cache (the large early layers are
// bound by memory bandwidth). Each thread sums its samples' weight gradients in double.
void backward(const float* xp, const float* wp, const float* gyp, float* gxp, float* gwp, const Geometry& g) {
  const int KK = g.K * g.K;
  const size_t taps = static_cast<size_t>(KK) * g.C;
  const std::vector<float> wt = taps_major(wp, g);
  const long in_size = static_cast<long>(g.H) * g.W * g.C, out_size = static_cast<long>(g.Ho) * g.Wo * g.C;
  std::vector<double> totals(static_cast<size_t>(omp_get_max_threads()) * taps, 0.0);
#pragma omp parallel
  {
    std::vector<float> sample(taps);
    // v16f elements: 64-byte aligned, so each 16-channel load is one cache line (for C a multiple of 16)
    std::vector<v16f> scratch((static_cast<size_t>(g.H + 2 * g.p) * (g.W + 2 * g.p) * g.C + kVec - 1) / kVec);
    float* padded = reinterpret_cast<float*>(scratch.data());
    double* mine = totals.data() + static_cast<size_t>(omp_get_thread_num()) * taps;
#pragma omp for schedule(static)
    for (int n = 0; n < g.N; ++n) {
      pad_sample(xp + n * in_size, g, padded);
      std::fill(sample.begin(), sample.end(), 0.f);
      weight_grad_sample(padded, gyp + n * out_size, sample.data(), g);
      for (size_t i = 0; i < taps; ++i) mine[i] += sample[i];
      input_grad_sample(gyp + n * out_size, wt.data(), gxp + n * in_size, g);
    }
  }
  const int threads = static_cast<int>(totals.size() / taps);
  for (int c = 0; c < g.C; ++c)
    for (int t = 0; t < KK; ++t) {
      double sum = 0.0;
      for (int th = 0; th < threads; ++th) sum += totals[th * taps + static_cast<size_t>(t) * g.C + c];
      gwp[c * KK + t] = static_cast<float>(sum);
    }
}

}  // namespace

std::vector<paddle::Tensor> DepthwiseNhwcForward(const paddle::Tensor& x_in, const paddle::Tensor& w_in, int stride,
                                                 int padding) {
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const Geometry g = geometry(x, w, stride, padding);
  auto out = paddle::empty({g.N, g.Ho, g.Wo, g.C}, paddle::DataType::FLOAT32, x.place());
  forward(x.data<float>(), w.data<float>(), out.data<float>(), g);
  return {out};
}

std::vector<paddle::Tensor> DepthwiseNhwcBackward(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                                  const paddle::Tensor& grad_in, int stride, int padding) {
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const auto grad_out = grad_in.contiguous();
  const Geometry g = geometry(x, w, stride, padding);
  auto gx = paddle::empty({g.N, g.H, g.W, g.C}, paddle::DataType::FLOAT32, x.place());
  auto gw = paddle::empty({g.C, 1, g.K, g.K}, paddle::DataType::FLOAT32, x.place());
  backward(x.data<float>(), w.data<float>(), grad_out.data<float>(), gx.data<float>(), gw.data<float>(), g);
  return {gx, gw};
}

std::vector<std::vector<int64_t>> DepthwiseNhwcInferShape(const std::vector<int64_t>& x,
                                                          const std::vector<int64_t>& w, const int& stride,
                                                          const int& padding) {
  auto out = [&](int64_t v) { return v < 0 ? v : (v + 2 * padding - w[2]) / stride + 1; };
  return {{x[0], out(x[1]), out(x[2]), x[3]}};
}

std::vector<paddle::DataType> DepthwiseNhwcInferDtype(const paddle::DataType& x, const paddle::DataType& w) {
  return {x};
}

PD_BUILD_OP(mbnet_depthwise_conv2d_nhwc)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(DepthwiseNhwcForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DepthwiseNhwcInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DepthwiseNhwcInferDtype));

PD_BUILD_GRAD_OP(mbnet_depthwise_conv2d_nhwc)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(DepthwiseNhwcBackward));
