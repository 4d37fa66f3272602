// Depthwise 2-D convolution for CPU, float32, NCHW, weight [C, 1, K, K], no bias.
//
// Why: paddle's CPU depthwise_conv2d runs one tiny GEMM per (sample, channel)
// and takes ~90 % of a MobileNet training step. Here every (sample, channel)
// plane is first copied into a zero-padded scratch plane (a few KB, stays in
// L1), so the convolution itself has no bounds checks: each output value is K*K
// multiply-adds held in a register, and the loop along an output row
// vectorizes. K = 3 with stride 1 or 2 (all MobileNets) is compiled with the
// kernel size and stride as constants so the K*K taps unroll; other sizes take
// the same code with runtime K and stride. OpenMP spreads the planes (forward)
// or channels (backward) over the cores.
#include <algorithm>
#include <cstring>
#include <vector>

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
  Geometry g;
  g.N = xs[0]; g.C = xs[1]; g.H = xs[2]; g.W = xs[3]; g.K = ws[2];
  g.s = stride; g.p = padding;
  g.Ho = (g.H + 2 * padding - g.K) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.K) / stride + 1;
  PD_CHECK(g.Ho > 0 && g.Wo > 0, "input is smaller than the kernel");
  return g;
}

// Copies the H x W plane `src` into the middle of the zero-bordered (H + 2p) x (W + 2p) plane `dst`.
void pad_plane(const float* __restrict__ src, float* __restrict__ dst, int H, int W, int p) {
  const int Wp = W + 2 * p;
  if (p == 0) {
    std::memcpy(dst, src, sizeof(float) * H * W);
    return;
  }
  std::memset(dst, 0, sizeof(float) * Wp * p);
  for (int h = 0; h < H; ++h) {
    float* row = dst + (h + p) * Wp;
    std::memset(row, 0, sizeof(float) * p);
    std::memcpy(row + p, src + h * W, sizeof(float) * W);
    std::memset(row + p + W, 0, sizeof(float) * p);
  }
  std::memset(dst + (H + p) * Wp, 0, sizeof(float) * Wp * p);
}

// out[oh][ow] = sum over kh, kw of w[kh][kw] * in[oh * s + kh][ow * s + kw], `in` being a padded
// plane of row length Wp. KT / ST > 0 fix K / s at compile time; 0 takes k / s at run time.
template <int KT, int ST>
void correlate(const float* __restrict__ in, int Wp, const float* __restrict__ w, float* __restrict__ out,
               int Ho, int Wo, int k, int s) {
  const int K = KT > 0 ? KT : k;
  const int S = ST > 0 ? ST : s;
  for (int oh = 0; oh < Ho; ++oh) {
    const float* __restrict__ base = in + oh * S * Wp;
    float* __restrict__ orow = out + oh * Wo;
#pragma omp simd
    for (int ow = 0; ow < Wo; ++ow) {
      float acc = 0.f;
      for (int kh = 0; kh < K; ++kh)
        for (int kw = 0; kw < K; ++kw) acc += w[kh * K + kw] * base[kh * Wp + ow * S + kw];
      orow[ow] = acc;
    }
  }
}

// Eight floats in GCC/Clang's portable vector extension (one AVX register; two SSE ones without AVX).
typedef float v8f __attribute__((vector_size(32)));
inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// gw[kh][kw] += sum over oh, ow of gy[oh][ow] * in[oh * s + kh][ow * s + kw] (in padded, as above).
// With K fixed and stride 1 or 2, eight output columns at a time keep their K * K partial sums in
// registers down the whole plane: no horizontal reduction per row. (GCC does not vectorize this outer
// loop by itself, hence the explicit vectors.) Stride 2 reads the column halves of `in` (split_columns),
// where the taps are contiguous. The remaining columns keep their sums per tap and column in `part`.
// Partial sums hold at most Ho terms in float; the per-plane totals go to gw in double.
template <int KT, int ST>
void weight_grad(const float* __restrict__ in, int Hp, int Wp, const float* __restrict__ halves,
                 const float* __restrict__ gy, double* __restrict__ gw, float* __restrict__ part, int Ho, int Wo,
                 int k, int s) {
  const int K = KT > 0 ? KT : k;
  const int S = ST > 0 ? ST : s;
  int ow0 = 0;
  if (KT > 0 && (ST == 1 || ST == 2)) {
    constexpr int KK = KT > 0 ? KT * KT : 1;
    const int Wh = (Wp + 1) / 2;
    for (; ow0 + 8 <= Wo; ow0 += 8) {
      v8f acc[KK] = {};
      for (int oh = 0; oh < Ho; ++oh) {
        const v8f gv = load8(gy + oh * Wo + ow0);
        for (int kh = 0; kh < KT; ++kh)
          for (int kw = 0; kw < KT; ++kw) {
            const float* ip = ST == 1 ? in + (oh + kh) * Wp + kw + ow0
                                      : halves + (kw & 1) * Hp * Wh + (2 * oh + kh) * Wh + (kw >> 1) + ow0;
            acc[kh * KT + kw] += gv * load8(ip);
          }
      }
      for (int t = 0; t < KK; ++t) std::memcpy(part + t * Wo + ow0, &acc[t], sizeof(v8f));
    }
  }
  for (int t = 0; t < K * K; ++t) std::fill(part + t * Wo + ow0, part + (t + 1) * Wo, 0.f);
  if (ow0 < Wo) {
    for (int oh = 0; oh < Ho; ++oh) {
      const float* __restrict__ grow = gy + oh * Wo;
      for (int t = 0; t < K * K; ++t) {
        const float* __restrict__ ip = in + (oh * S + t / K) * Wp + t % K;
        float* __restrict__ acc = part + t * Wo;
#pragma omp simd
        for (int ow = ow0; ow < Wo; ++ow) acc[ow] += grow[ow] * ip[ow * S];
      }
    }
  }
  for (int t = 0; t < K * K; ++t) {
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int ow = 0; ow < Wo; ++ow) sum += part[t * Wo + ow];
    gw[t] += sum;
  }
}

// Stride 2: the Hp x Wp plane `src` as two Hp x ceil(Wp / 2) planes, even columns then odd ones (the
// odd half's last column is zero when Wp is odd), so column ow * 2 + kw is column ow + kw / 2 of half
// kw % 2: stride-2 taps become contiguous loads. merge_columns is the inverse for the plane's middle.
void split_columns(const float* __restrict__ src, int Hp, int Wp, float* __restrict__ dst) {
  const int Wh = (Wp + 1) / 2;
  float* __restrict__ even = dst;
  float* __restrict__ odd = dst + Hp * Wh;
  for (int r = 0; r < Hp; ++r) {
    const float* __restrict__ row = src + r * Wp;
    for (int j = 0; j < Wp / 2; ++j) {
      even[r * Wh + j] = row[2 * j];
      odd[r * Wh + j] = row[2 * j + 1];
    }
    if (Wp % 2) {
      even[r * Wh + Wh - 1] = row[Wp - 1];
      odd[r * Wh + Wh - 1] = 0.f;
    }
  }
}

void merge_columns(const float* __restrict__ halves, int Hp, int Wp, int p, float* __restrict__ out, int H, int W) {
  const int Wh = (Wp + 1) / 2;
  for (int h = 0; h < H; ++h)
    for (int w = 0; w < W; ++w) {
      const int c = w + p;
      out[h * W + w] = halves[(c & 1) * Hp * Wh + (h + p) * Wh + (c >> 1)];
    }
}

// Input gradient by scattering: gxp[oh * s + kh][ow * s + kw] += w[kh][kw] * gy[oh][ow] into a padded
// plane gxp (zeroed by the caller). Used where the gather form below does not apply (stride > 1).
template <int KT, int ST>
void scatter_input_grad(const float* __restrict__ gy, const float* __restrict__ w, float* __restrict__ gxp, int Wp,
                        int Ho, int Wo, int k, int s) {
  const int K = KT > 0 ? KT : k;
  const int S = ST > 0 ? ST : s;
  for (int oh = 0; oh < Ho; ++oh) {
    const float* __restrict__ grow = gy + oh * Wo;
    for (int kh = 0; kh < K; ++kh) {
      float* __restrict__ base = gxp + (oh * S + kh) * Wp;
      for (int kw = 0; kw < K; ++kw) {
        const float wv = w[kh * K + kw];
        float* __restrict__ gp = base + kw;
#pragma omp simd
        for (int ow = 0; ow < Wo; ++ow) gp[ow * S] += wv * grow[ow];
      }
    }
  }
}

// Scratch planes of one thread, reused across the planes it handles.
struct Scratch {
  std::vector<float> a, b, c, part;
};

template <int KT, int ST>
void forward_plane(const float* x, const float* w, float* out, const Geometry& g, Scratch& t) {
  pad_plane(x, t.a.data(), g.H, g.W, g.p);
  correlate<KT, ST>(t.a.data(), g.Wp(), w, out, g.Ho, g.Wo, g.K, g.s);
}

// One (sample, channel) plane of the backward pass: the input gradient plane gx and this plane's share of
// the weight gradient (added to gw). With stride 1 and p <= K - 1 the input gradient is the forward
// correlation of gy, padded by K - 1 - p, with the kernel rotated by 180 degrees (wr). Otherwise it is
// scattered into a padded plane whose middle is then copied out; for 3x3 stride 2 into its column
// halves, where every tap's row of targets is contiguous.
template <int KT, int ST>
void backward_plane(const float* x, const float* w, const float* wr, const float* gy, float* gx, double* gw,
                    const Geometry& g, Scratch& t) {
  const int Hp = g.Hp(), Wp = g.Wp();
  pad_plane(x, t.a.data(), g.H, g.W, g.p);
  const bool halves = KT > 0 && ST == 2;
  if (halves) split_columns(t.a.data(), Hp, Wp, t.c.data());
  weight_grad<KT, ST>(t.a.data(), Hp, Wp, t.c.data(), gy, gw, t.part.data(), g.Ho, g.Wo, g.K, g.s);
  const int q = g.K - 1 - g.p;
  if (g.s == 1 && q >= 0) {
    pad_plane(gy, t.b.data(), g.Ho, g.Wo, q);
    correlate<KT, ST>(t.b.data(), g.Wo + 2 * q, wr, gx, g.H, g.W, g.K, 1);
  } else if (halves) {
    const int Wh = (Wp + 1) / 2;
    std::fill(t.b.begin(), t.b.begin() + 2 * Hp * Wh, 0.f);
    for (int oh = 0; oh < g.Ho; ++oh) {
      const float* __restrict__ grow = gy + oh * g.Wo;
      for (int kh = 0; kh < KT; ++kh)
        for (int kw = 0; kw < KT; ++kw) {
          const float wv = w[kh * KT + kw];
          float* __restrict__ dst = t.b.data() + (kw & 1) * Hp * Wh + (2 * oh + kh) * Wh + (kw >> 1);
#pragma omp simd
          for (int ow = 0; ow < g.Wo; ++ow) dst[ow] += wv * grow[ow];
        }
    }
    merge_columns(t.b.data(), Hp, Wp, g.p, gx, g.H, g.W);
  } else {
    std::fill(t.b.begin(), t.b.end(), 0.f);
    scatter_input_grad<KT, ST>(gy, w, t.b.data(), Wp, g.Ho, g.Wo, g.K, g.s);
    for (int h = 0; h < g.H; ++h) std::memcpy(gx + h * g.W, t.b.data() + (h + g.p) * Wp + g.p, sizeof(float) * g.W);
  }
}

void forward(const float* xp, const float* wp, float* op, const Geometry& g) {
  const long planes = static_cast<long>(g.N) * g.C;
  const int KK = g.K * g.K;
#pragma omp parallel
  {
    Scratch t;
    t.a.resize(static_cast<size_t>(g.Hp()) * g.Wp());
#pragma omp for schedule(static)
    for (long i = 0; i < planes; ++i) {
      const float* x = xp + i * g.H * g.W;
      const float* w = wp + (i % g.C) * KK;
      float* out = op + i * g.Ho * g.Wo;
      if (g.K == 3 && g.s == 1) forward_plane<3, 1>(x, w, out, g, t);
      else if (g.K == 3 && g.s == 2) forward_plane<3, 2>(x, w, out, g, t);
      else forward_plane<0, 0>(x, w, out, g, t);
    }
  }
}

void backward(const float* xp, const float* wp, const float* gyp, float* gxp, float* gwp, const Geometry& g) {
  const int KK = g.K * g.K;
  const int q = std::max(g.K - 1 - g.p, 0);
  // Parallel over channels: each thread owns whole channels, so the weight gradient needs no atomics.
#pragma omp parallel
  {
    Scratch t;
    t.a.resize(static_cast<size_t>(g.Hp()) * g.Wp());
    const size_t halves = 2 * static_cast<size_t>(g.Hp()) * ((g.Wp() + 1) / 2);  // >= Hp * Wp
    t.b.resize(std::max(halves, static_cast<size_t>(g.Ho + 2 * q) * (g.Wo + 2 * q)));
    t.c.resize(halves);
    t.part.resize(static_cast<size_t>(KK) * g.Wo);
    std::vector<float> wr(KK);
    std::vector<double> acc(KK);
#pragma omp for schedule(static)
    for (int c = 0; c < g.C; ++c) {
      const float* w = wp + c * KK;
      for (int k = 0; k < KK; ++k) wr[k] = w[KK - 1 - k];
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int n = 0; n < g.N; ++n) {
        const long i = static_cast<long>(n) * g.C + c;
        const float* x = xp + i * g.H * g.W;
        const float* gy = gyp + i * g.Ho * g.Wo;
        float* gx = gxp + i * g.H * g.W;
        if (g.K == 3 && g.s == 1) backward_plane<3, 1>(x, w, wr.data(), gy, gx, acc.data(), g, t);
        else if (g.K == 3 && g.s == 2) backward_plane<3, 2>(x, w, wr.data(), gy, gx, acc.data(), g, t);
        else backward_plane<0, 0>(x, w, wr.data(), gy, gx, acc.data(), g, t);
      }
      for (int k = 0; k < KK; ++k) gwp[c * KK + k] = static_cast<float>(acc[k]);
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
