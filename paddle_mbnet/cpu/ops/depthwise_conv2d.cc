// Depthwise 2-D convolution for CPU, float32, NCHW, weight [C, 1, K, K], no bias.
//
// Why: paddle's CPU depthwise_conv2d runs one tiny GEMM per (sample, channel) and dominated a
// MobileNet training step (docs/performance.md). Here eight channels of one sample go together: their planes are
// interleaved pixel by pixel into a zero-padded scratch, so each pixel is one 8-float vector and each
// kernel tap one vector multiply-add across the channels, with no bounds checks and no dependence on
// the plane's width (the late 4x4 and 2x2 maps of a CIFAR MobileNet run as fast per value as the
// 32x32 ones). K = 3 with stride 1 or 2 (all MobileNets) is compiled with the kernel size and stride
// as constants so the taps unroll; other sizes run the same code with runtime values. OpenMP spreads
// (sample, channel block) pairs over the cores in the forward pass and channel blocks in the backward
// pass, so each thread owns whole channels of the weight gradient and needs no atomics.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "paddle/extension.h"

namespace {

struct Geometry {
  int N, C, H, W, K, Ho, Wo, s, p;
  int Hp() const { return H + 2 * p; }
  int Wp() const { return W + 2 * p; }
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
  // Checked before the division below, which truncates towards zero and would give one output row.
  PD_CHECK(xs[2] + 2 * padding >= ws[2] && xs[3] + 2 * padding >= ws[2], "input is smaller than the kernel");
  Geometry g;
  g.N = xs[0]; g.C = xs[1]; g.H = xs[2]; g.W = xs[3]; g.K = ws[2];
  g.s = stride; g.p = padding;
  g.Ho = (g.H + 2 * padding - g.K) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.K) / stride + 1;
  return g;
}

// Eight floats in GCC/Clang's portable vector extension (one AVX register; two SSE ones without AVX).
typedef float v8f __attribute__((vector_size(32)));
constexpr int kBlock = 8;  // channels per vector

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }

#if defined(__AVX__)
// Transposes an 8 x 8 block: row j of the input is src[j][0..7], row k of the output dst[k][0..7] = src[0..7][k].
// Interleaving eight planes and the inverse are both this, eight positions at a time; done value by value they
// were a large share of the operator's time (64 scalar loads and stores per eight pixels).
inline void transpose8(const float* const src[kBlock], float* const dst[kBlock]) {
  __m256 r[kBlock], t[kBlock], u[kBlock];
  for (int j = 0; j < kBlock; ++j) r[j] = _mm256_loadu_ps(src[j]);
  for (int j = 0; j < kBlock; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < kBlock; j += 4) {
    u[j] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(dst[k], _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
    _mm256_storeu_ps(dst[k + 4], _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
  }
}
constexpr bool kTransposeInRegisters = true;
#else
inline void transpose8(const float* const src[kBlock], float* const dst[kBlock]) {
  for (int j = 0; j < kBlock; ++j)
    for (int k = 0; k < kBlock; ++k) dst[k][j] = src[j][k];
}
constexpr bool kTransposeInRegisters = false;
#endif

// Walks the positions of an H x W plane in order and gives each one's pixel in a copy padded by p.
struct PaddedCursor {
  int W, Wp, p, h = 0, w = 0;
  PaddedCursor(int width, int pad) : W(width), Wp(width + 2 * pad), p(pad) {}
  long offset() const { return (static_cast<long>(h + p) * Wp + w + p) * kBlock; }
  void next() {
    if (++w == W) w = 0, ++h;
  }
};

// Planes j < valid of H x W, `plane` floats apart from src -> dst[((h + p) * Wp + w + p) * kBlock + j],
// zero border; channels j >= valid (the last block when C is not a multiple of 8) are zero too.
void interleave(const float* __restrict__ src, long plane, int valid, int H, int W, int p, float* __restrict__ dst) {
  std::memset(dst, 0, sizeof(float) * kBlock * (H + 2 * p) * (W + 2 * p));
  const long positions = static_cast<long>(H) * W;
  long q = 0;
  PaddedCursor at(W, p);
  if (kTransposeInRegisters && valid == kBlock) {
    for (; q + kBlock <= positions; q += kBlock) {
      const float* rows[kBlock];
      float* pixels[kBlock];
      for (int j = 0; j < kBlock; ++j) rows[j] = src + j * plane + q;
      for (int k = 0; k < kBlock; ++k, at.next()) pixels[k] = dst + at.offset();
      transpose8(rows, pixels);
    }
  }
  for (; q < positions; ++q, at.next())
    for (int j = 0; j < valid; ++j) dst[at.offset() + j] = src[j * plane + q];
}

// The inverse, for the middle H x W of an interleaved plane padded by p.
void deinterleave(const float* __restrict__ src, int H, int W, int p, int valid, float* __restrict__ dst, long plane) {
  const long positions = static_cast<long>(H) * W;
  long q = 0;
  PaddedCursor at(W, p);
  if (kTransposeInRegisters && valid == kBlock) {
    for (; q + kBlock <= positions; q += kBlock) {
      const float* pixels[kBlock];
      float* rows[kBlock];
      for (int k = 0; k < kBlock; ++k, at.next()) pixels[k] = src + at.offset();
      for (int j = 0; j < kBlock; ++j) rows[j] = dst + j * plane + q;
      transpose8(pixels, rows);
    }
  }
  for (; q < positions; ++q, at.next())
    for (int j = 0; j < valid; ++j) dst[j * plane + q] = src[at.offset() + j];
}

int blocks_of(const Geometry& g) { return (g.C + kBlock - 1) / kBlock; }
int valid_in(const Geometry& g, int b) { return std::min(kBlock, g.C - b * kBlock); }

// wv[b * KK + t][j] = tap t of channel b * kBlock + j (zero past C).
std::vector<v8f> block_weights(const float* wp, const Geometry& g) {
  const int KK = g.K * g.K;
  std::vector<v8f> wv(static_cast<size_t>(blocks_of(g)) * KK, v8f{});
  for (int c = 0; c < g.C; ++c)
    for (int t = 0; t < KK; ++t) wv[(c / kBlock) * KK + t][c % kBlock] = wp[c * KK + t];
  return wv;
}

// out = correlation of one (sample, channel block) with its kernels. KT / ST > 0 fix K / s at compile time.
template <int KT, int ST>
void forward_block(const float* x, const v8f* wv, float* out, int valid, const Geometry& g, float* buf) {
  const int K = KT > 0 ? KT : g.K, S = ST > 0 ? ST : g.s, Wp = g.Wp();
  float* in = buf;
  float* res = buf + static_cast<size_t>(g.Hp()) * Wp * kBlock;
  interleave(x, static_cast<long>(g.H) * g.W, valid, g.H, g.W, g.p, in);
  for (int oh = 0; oh < g.Ho; ++oh)
    for (int ow = 0; ow < g.Wo; ++ow) {
      v8f acc = {};
      for (int kh = 0; kh < K; ++kh)
        for (int kw = 0; kw < K; ++kw) acc += wv[kh * K + kw] * load8(in + ((oh * S + kh) * Wp + ow * S + kw) * kBlock);
      store8(res + (oh * g.Wo + ow) * kBlock, acc);
    }
  deinterleave(res, g.Ho, g.Wo, 0, valid, out, static_cast<long>(g.Ho) * g.Wo);
}

// One sample of a channel block: the input gradient, scattered tap by tap into a padded scratch whose
// middle is then copied out, and this sample's share of the block's weight gradient, added to gw
// (double, [tap][channel]; the per-sample sums over the plane are float).
template <int KT, int ST>
void backward_block(const float* x, const v8f* wv, const float* gy, float* gx, double* gw, int valid,
                    const Geometry& g, float* buf) {
  const int K = KT > 0 ? KT : g.K, S = ST > 0 ? ST : g.s, Wp = g.Wp(), KK = K * K;
  const size_t padded = static_cast<size_t>(g.Hp()) * Wp * kBlock;
  float* in = buf;
  float* gin = buf + padded;
  float* gout = buf + 2 * padded;
  interleave(x, static_cast<long>(g.H) * g.W, valid, g.H, g.W, g.p, in);
  interleave(gy, static_cast<long>(g.Ho) * g.Wo, valid, g.Ho, g.Wo, 0, gout);
  std::memset(gin, 0, sizeof(float) * padded);
  constexpr int kFixed = KT > 0 ? KT * KT : 1;
  v8f fixed[kFixed] = {};
  std::vector<v8f> dynamic(KT > 0 ? 0 : KK, v8f{});
  v8f* acc = KT > 0 ? fixed : dynamic.data();
  for (int oh = 0; oh < g.Ho; ++oh)
    for (int ow = 0; ow < g.Wo; ++ow) {
      const v8f gv = load8(gout + (oh * g.Wo + ow) * kBlock);
      for (int kh = 0; kh < K; ++kh)
        for (int kw = 0; kw < K; ++kw) {
          const int i = ((oh * S + kh) * Wp + ow * S + kw) * kBlock;
          acc[kh * K + kw] += gv * load8(in + i);
          store8(gin + i, load8(gin + i) + wv[kh * K + kw] * gv);
        }
    }
  for (int t = 0; t < KK; ++t)
    for (int j = 0; j < kBlock; ++j) gw[t * kBlock + j] += acc[t][j];
  deinterleave(gin, g.H, g.W, g.p, valid, gx, static_cast<long>(g.H) * g.W);
}

size_t padded_size(const Geometry& g) { return static_cast<size_t>(g.Hp()) * g.Wp() * kBlock; }

void forward(const float* xp, const float* wp, float* op, const Geometry& g) {
  const int KK = g.K * g.K, blocks = blocks_of(g);
  const std::vector<v8f> wv = block_weights(wp, g);
  const long items = static_cast<long>(g.N) * blocks;
#pragma omp parallel
  {
    std::vector<float> buf(padded_size(g) + static_cast<size_t>(g.Ho) * g.Wo * kBlock);
#pragma omp for schedule(static)
    for (long i = 0; i < items; ++i) {
      const int b = static_cast<int>(i % blocks), valid = valid_in(g, b);
      const long first = (i / blocks) * g.C + b * kBlock;  // plane index of (sample, first channel)
      const float* x = xp + first * g.H * g.W;
      float* out = op + first * g.Ho * g.Wo;
      const v8f* w = wv.data() + b * KK;
      if (g.K == 3 && g.s == 1) forward_block<3, 1>(x, w, out, valid, g, buf.data());
      else if (g.K == 3 && g.s == 2) forward_block<3, 2>(x, w, out, valid, g, buf.data());
      else forward_block<0, 0>(x, w, out, valid, g, buf.data());
    }
  }
}

void backward(const float* xp, const float* wp, const float* gyp, float* gxp, float* gwp, const Geometry& g) {
  const int KK = g.K * g.K, blocks = blocks_of(g);
  const std::vector<v8f> wv = block_weights(wp, g);
#pragma omp parallel
  {
    std::vector<float> buf(2 * padded_size(g) + static_cast<size_t>(g.Ho) * g.Wo * kBlock);
    std::vector<double> acc(static_cast<size_t>(KK) * kBlock);
#pragma omp for schedule(static)
    for (int b = 0; b < blocks; ++b) {
      const int valid = valid_in(g, b);
      const v8f* w = wv.data() + b * KK;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int n = 0; n < g.N; ++n) {
        const long first = static_cast<long>(n) * g.C + b * kBlock;
        const float* x = xp + first * g.H * g.W;
        const float* gy = gyp + first * g.Ho * g.Wo;
        float* gx = gxp + first * g.H * g.W;
        if (g.K == 3 && g.s == 1) backward_block<3, 1>(x, w, gy, gx, acc.data(), valid, g, buf.data());
        else if (g.K == 3 && g.s == 2) backward_block<3, 2>(x, w, gy, gx, acc.data(), valid, g, buf.data());
        else backward_block<0, 0>(x, w, gy, gx, acc.data(), valid, g, buf.data());
      }
      for (int j = 0; j < valid; ++j)
        for (int t = 0; t < KK; ++t) gwp[(b * kBlock + j) * KK + t] = static_cast<float>(acc[t * kBlock + j]);
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
  forward(x.data<float>(), w.data<float>(), out.data<float>(), g);
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
  backward(x.data<float>(), w.data<float>(), grad_out.data<float>(), gx.data<float>(), gw.data<float>(), g);
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
