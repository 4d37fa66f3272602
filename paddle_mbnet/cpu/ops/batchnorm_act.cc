// BatchNorm followed by an activation (none, ReLU or ReLU6) for CPU, float32, NCHW or NHWC, as one operator.
//
// Why: on CPU paddle runs batch_norm and the activation as separate kernels, each a few passes over the
// tensor, and together they were the largest share of a MobileNet training step after the convolutions
// (docs/performance.md). Here the forward is two passes (statistics, then normalise + affine + activation)
// and the backward two (the two per-channel sums, then the input gradient), with the activation's mask
// recomputed from the input instead of stored. OpenMP runs over blocks of channels, so each thread owns whole
// channels and needs no atomics. Sums are kept in double. The running statistics are updated by the caller (models/layers.py).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"

namespace {

enum Act { kNone = 0, kRelu = 1, kRelu6 = 2 };

struct Shape {
  int64_t N, C, HW;
};

// Checks the input and every per-channel tensor (float32, CPU, contiguous, one value per channel). A channels-last
// input [N, ..., C] is described as N * ... rows of C channels and one position each.
Shape shape_of(const paddle::Tensor& x, const std::vector<const paddle::Tensor*>& per_channel, bool channels_last) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32, "mbnet batchnorm_act: float32 CPU input only");
  auto xs = x.shape();
  PD_CHECK(xs.size() >= 2, channels_last ? "input must be [N, ..., C]" : "input must be [N, C, ...]");
  Shape s{xs[0], xs[1], 1};
  if (channels_last) {
    s.C = xs.back();
    for (size_t i = 1; i + 1 < xs.size(); ++i) s.N *= xs[i];
  } else {
    for (size_t i = 2; i < xs.size(); ++i) s.HW *= xs[i];
  }
  PD_CHECK(s.N * s.HW > 0 && s.C > 0, "mbnet batchnorm_act: the input has no channels or no values per channel");
  for (const paddle::Tensor* t : per_channel) {
    PD_CHECK(t->is_cpu() && t->dtype() == paddle::DataType::FLOAT32 && t->numel() == s.C && t->is_contiguous(),
             "mbnet batchnorm_act: scale, bias, mean and variance must be float32 CPU tensors of one value per "
             "channel");
  }
  return s;
}

// The per-channel normalisation, computed once from the float mean and variance that the forward saves, so
// forward and backward see bit-identical pre-activations and hence the same activation mask.
struct Affine {
  float mean, scale, beta;  // pre-activation = (x - mean) * scale + beta, scale = gamma / sqrt(var + eps)
  double invstd;
};

inline Affine affine(float mean, float var, float gamma, float beta, float epsilon) {
  double invstd = 1.0 / std::sqrt(static_cast<double>(var) + epsilon);
  return {mean, static_cast<float>(gamma * invstd), beta, invstd};
}

// (x - mean) first: a channel whose values all equal its mean (a dead channel in a ReLU network) then gets
// exactly beta, not a rounding error on either side of the activation's kink. An explicit fma: the compiler
// may not contract two copies of a*b+c the same way.
inline float pre_act(float x, float mean, float scale, float beta) { return std::fma(x - mean, scale, beta); }

// The activation is a template parameter, so each inner loop is compiled for one activation, with no
// per-element test of which one it is.
template <int ACT>
inline float activate(float v) {
  if (ACT == kRelu) return v > 0.f ? v : 0.f;
  if (ACT == kRelu6) return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
  return v;
}

// 1 where the gradient passes, the activation's output strictly inside its linear range (paddle's rule), else
// 0. A multiply by it, not a select: GCC turned the select into branches, which made the backward 5x slower.
template <int ACT>
inline float mask(float v) {
  if (ACT == kRelu) return v > 0.f ? 1.f : 0.f;
  if (ACT == kRelu6) return (v > 0.f && v < 6.f) ? 1.f : 0.f;
  return 1.f;
}

// Channels are processed in blocks of `cb` consecutive channels, so that one sample's slice of a block,
// cb * HW floats, is one contiguous run of up to about 4 KB: on the 4x4 and 2x2 maps at the end of a CIFAR network
// a channel-at-a-time loop reads 64- or 16-byte pieces at a stride of C * HW floats, which left those layers at a
// fraction of the memory bandwidth (docs/performance.md). Both passes of a direction run block by block, so the
// second pass finds the block's N slices still in cache. The per-channel constants are expanded to one value per
// position of a slice, so each pass is one flat vector loop whatever HW is.
int64_t channels_per_block(const Shape& s) {
  const int64_t by_size = std::max<int64_t>(1, 1024 / s.HW);
  return std::max<int64_t>(1, std::min(by_size, s.C / 8));  // at least 8 blocks (or one per channel) for the threads
}

// A block's channels [c0, c0 + nc) and the per-position buffers of one thread.
struct Block {
  int64_t c0, nc, len;  // len = nc * HW: the floats of one sample's slice
  std::vector<double> sum_a, sum_b;
  std::vector<float> mean, scale, beta, coef_a, coef_b;

  Block(int64_t cb, int64_t HW)
      : c0(0), nc(0), len(0), sum_a(cb * HW), sum_b(cb * HW), mean(cb * HW), scale(cb * HW), beta(cb * HW),
        coef_a(cb * HW), coef_b(cb * HW) {}

  void select(int64_t block, int64_t cb, const Shape& s) {
    c0 = block * cb;
    nc = std::min(cb, s.C - c0);
    len = nc * s.HW;
  }

  void zero_sums() {
    std::fill(sum_a.begin(), sum_a.begin() + len, 0.0);
    std::fill(sum_b.begin(), sum_b.begin() + len, 0.0);
  }

  // Per-channel totals of the per-position sums (a one-channel block sums into sum_a[0] and sum_b[0] alone).
  void channel_totals(int64_t HW, int64_t j, double* a, double* b) const {
    if (nc == 1) {
      *a = sum_a[0];
      *b = sum_b[0];
      return;
    }
    double ta = 0.0, tb = 0.0;
    for (int64_t i = j * HW; i < (j + 1) * HW; ++i) {
      ta += sum_a[i];
      tb += sum_b[i];
    }
    *a = ta;
    *b = tb;
  }

  // Expands channel j's affine to its HW positions.
  void expand(int64_t HW, int64_t j, const Affine& a) {
    std::fill(mean.begin() + j * HW, mean.begin() + (j + 1) * HW, a.mean);
    std::fill(scale.begin() + j * HW, scale.begin() + (j + 1) * HW, a.scale);
    std::fill(beta.begin() + j * HW, beta.begin() + (j + 1) * HW, a.beta);
  }

  const float* slice(const float* base, int64_t n, const Shape& s) const { return base + (n * s.C + c0) * s.HW; }
  float* slice(float* base, int64_t n, const Shape& s) const { return base + (n * s.C + c0) * s.HW; }
};

// The block's per-position sums of x and x^2 over the batch, then each channel's mean and biased variance.
void block_moments(const float* xp, const Shape& s, Block& blk, double* mean, double* var) {
  blk.zero_sums();
  double* sa = blk.sum_a.data();
  double* sb = blk.sum_b.data();
  for (int64_t n = 0; n < s.N; ++n) {
    const float* in = blk.slice(xp, n, s);
    if (blk.nc == 1) {  // one channel (a large map, few channels, or the last block): a register reduction
      double sum = 0.0, sumsq = 0.0;
#pragma omp simd reduction(+ : sum, sumsq)
      for (int64_t k = 0; k < blk.len; ++k) {
        double v = in[k];
        sum += v;
        sumsq += v * v;
      }
      sa[0] += sum;
      sb[0] += sumsq;
      continue;
    }
#pragma omp simd
    for (int64_t k = 0; k < blk.len; ++k) {
      double v = in[k];
      sa[k] += v;
      sb[k] += v * v;
    }
  }
  const double count = static_cast<double>(s.N * s.HW);
  for (int64_t j = 0; j < blk.nc; ++j) {
    double sum, sumsq;
    blk.channel_totals(s.HW, j, &sum, &sumsq);
    mean[j] = sum / count;
    var[j] = std::max(sumsq / count - mean[j] * mean[j], 0.0);
  }
}

template <int ACT>
void forward_channels(const float* xp, const float* gp, const float* bp, const float* rm, const float* rv,
                      float* yp, float* mp, float* vp, const Shape& s, float epsilon, bool training) {
  const int64_t cb = channels_per_block(s);
  const int64_t blocks = (s.C + cb - 1) / cb;
#pragma omp parallel
  {
    Block blk(cb, s.HW);
    std::vector<double> mean(cb), var(cb);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      blk.select(b, cb, s);
      if (training) block_moments(xp, s, blk, mean.data(), var.data());
      for (int64_t j = 0; j < blk.nc; ++j) {
        const int64_t c = blk.c0 + j;
        mp[c] = static_cast<float>(training ? mean[j] : rm[c]);
        vp[c] = static_cast<float>(training ? var[j] : rv[c]);
        blk.expand(s.HW, j, affine(mp[c], vp[c], gp[c], bp[c], epsilon));
      }
      const float* mu = blk.mean.data();
      const float* sc = blk.scale.data();
      const float* be = blk.beta.data();
      for (int64_t n = 0; n < s.N; ++n) {
        const float* in = blk.slice(xp, n, s);
        float* out = blk.slice(yp, n, s);
#pragma omp simd
        for (int64_t k = 0; k < blk.len; ++k) out[k] = activate<ACT>(pre_act(in[k], mu[k], sc[k], be[k]));
      }
    }
  }
}

template <int ACT>
void backward_channels(const float* xp, const float* dyp, const float* gp, const float* bp, const float* mp,
                       const float* vp, float* dxp, float* dgp, float* dbp, const Shape& s, float epsilon,
                       bool training) {
  const double count = static_cast<double>(s.N * s.HW);
  const int64_t cb = channels_per_block(s);
  const int64_t blocks = (s.C + cb - 1) / cb;
#pragma omp parallel
  {
    Block blk(cb, s.HW);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      blk.select(b, cb, s);
      for (int64_t j = 0; j < blk.nc; ++j) {
        const int64_t c = blk.c0 + j;
        blk.expand(s.HW, j, affine(mp[c], vp[c], gp[c], bp[c], epsilon));
      }
      const float* mu = blk.mean.data();
      const float* sc = blk.scale.data();
      const float* be = blk.beta.data();
      blk.zero_sums();
      double* sum_dz = blk.sum_a.data();
      double* sum_dz_xc = blk.sum_b.data();  // xc = x - mean; xhat = xc * invstd
      for (int64_t n = 0; n < s.N; ++n) {
        const float* in = blk.slice(xp, n, s);
        const float* g = blk.slice(dyp, n, s);
        if (blk.nc == 1) {  // as in block_moments
          double total_dz = 0.0, total_dz_xc = 0.0;
#pragma omp simd reduction(+ : total_dz, total_dz_xc)
          for (int64_t k = 0; k < blk.len; ++k) {
            float dz = g[k] * mask<ACT>(pre_act(in[k], mu[k], sc[k], be[k]));
            total_dz += dz;
            total_dz_xc += static_cast<double>(dz) * (in[k] - mu[k]);
          }
          sum_dz[0] += total_dz;
          sum_dz_xc[0] += total_dz_xc;
          continue;
        }
#pragma omp simd
        for (int64_t k = 0; k < blk.len; ++k) {
          float dz = g[k] * mask<ACT>(pre_act(in[k], mu[k], sc[k], be[k]));
          sum_dz[k] += dz;
          sum_dz_xc[k] += static_cast<double>(dz) * (in[k] - mu[k]);
        }
      }
      for (int64_t j = 0; j < blk.nc; ++j) {
        const int64_t c = blk.c0 + j;
        const double invstd = affine(mp[c], vp[c], gp[c], bp[c], epsilon).invstd;
        double dz_total, dz_xc_total;
        blk.channel_totals(s.HW, j, &dz_total, &dz_xc_total);
        dbp[c] = static_cast<float>(dz_total);
        dgp[c] = static_cast<float>(dz_xc_total * invstd);
        const float mean_dz = training ? static_cast<float>(dz_total / count) : 0.f;
        const float xc_coef = training ? static_cast<float>(dz_xc_total * invstd * invstd / count) : 0.f;
        std::fill(blk.coef_a.begin() + j * s.HW, blk.coef_a.begin() + (j + 1) * s.HW, mean_dz);
        std::fill(blk.coef_b.begin() + j * s.HW, blk.coef_b.begin() + (j + 1) * s.HW, xc_coef);
      }
      const float* mean_dz = blk.coef_a.data();
      const float* xc_coef = blk.coef_b.data();
      for (int64_t n = 0; n < s.N; ++n) {
        const float* in = blk.slice(xp, n, s);
        const float* g = blk.slice(dyp, n, s);
        float* out = blk.slice(dxp, n, s);
#pragma omp simd
        for (int64_t k = 0; k < blk.len; ++k) {
          float dz = g[k] * mask<ACT>(pre_act(in[k], mu[k], sc[k], be[k]));
          out[k] = sc[k] * (dz - mean_dz[k] - (in[k] - mu[k]) * xc_coef[k]);  // scale = gamma * invstd
        }
      }
    }
  }
}


// Channels-last (NHWC) tensors are [rows, C] with rows = N * H * W. Threads split the rows; each sums into its own
// per-channel accumulators (double), which are added up after the pass, and every inner loop runs along the
// channels of one row, contiguous whatever the map size.
struct RowSums {
  std::vector<double> a, b;  // [threads][C] each
  int64_t C;
  explicit RowSums(int64_t channels)
      : a(static_cast<size_t>(omp_get_max_threads()) * channels, 0.0),
        b(static_cast<size_t>(omp_get_max_threads()) * channels, 0.0), C(channels) {}
  double* mine_a() { return a.data() + omp_get_thread_num() * C; }
  double* mine_b() { return b.data() + omp_get_thread_num() * C; }
  void totals(double* ta, double* tb) const {  // sums over the threads' accumulators
    const int64_t threads = static_cast<int64_t>(a.size()) / C;
    for (int64_t c = 0; c < C; ++c) {
      double sa = 0.0, sb = 0.0;
      for (int64_t t = 0; t < threads; ++t) {
        sa += a[t * C + c];
        sb += b[t * C + c];
      }
      ta[c] = sa;
      tb[c] = sb;
    }
  }
};

constexpr int64_t kSumWidth = 16;  // channels summed at once, in registers

// Adds to sa[c], sb[c] the two per-channel terms term(r, c) -> (a, b) over rows [r0, r1), for all C channels.
// Why this order: accumulating row by row into per-channel memory costs a load and a store of both sums per
// value, which made the backward pass slower than the NCHW kernel. Here 16 channels are summed over the chunk's
// rows in registers (double, as the NCHW kernel sums: the backward's sums cancel), then added once into the
// thread's totals; the chunk is small enough to stay in cache while its channels are visited 16 at a time.
template <class Term>
void sum_rows(int64_t r0, int64_t r1, int64_t C, Term term, double* sa, double* sb) {
  int64_t c = 0;
  for (; c + kSumWidth <= C; c += kSumWidth) {
    double acc_a[kSumWidth] = {}, acc_b[kSumWidth] = {};
    for (int64_t r = r0; r < r1; ++r) {
#pragma omp simd
      for (int64_t j = 0; j < kSumWidth; ++j) {
        double a, b;
        term(r, c + j, &a, &b);
        acc_a[j] += a;
        acc_b[j] += b;
      }
    }
    for (int64_t j = 0; j < kSumWidth; ++j) {
      sa[c + j] += acc_a[j];
      sb[c + j] += acc_b[j];
    }
  }
  for (; c < C; ++c) {  // channels past the last multiple of 16
    double acc_a = 0.0, acc_b = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      double a, b;
      term(r, c, &a, &b);
      acc_a += a;
      acc_b += b;
    }
    sa[c] += acc_a;
    sb[c] += acc_b;
  }
}

// Rows per chunk of sum_rows: about 32 KB of each input, and at least 16 rows.
inline int64_t rows_per_chunk(int64_t C) { return std::max<int64_t>(16, 8192 / C); }

// Per-channel sums of term over all rows, split over the threads by chunks of rows.
template <class Term>
void channel_sums(int64_t rows, int64_t C, Term term, double* total_a, double* total_b) {
  RowSums sums(C);
  const int64_t chunk = rows_per_chunk(C), chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel
  {
    double* sa = sums.mine_a();
    double* sb = sums.mine_b();
#pragma omp for schedule(static)
    for (int64_t k = 0; k < chunks; ++k) sum_rows(k * chunk, std::min(rows, (k + 1) * chunk), C, term, sa, sb);
  }
  sums.totals(total_a, total_b);
}

// The per-channel affine of every channel as three float arrays, for the vector loops along a row.
struct ChannelAffine {
  std::vector<float> mean, scale, beta;
  std::vector<double> invstd;
  ChannelAffine(const float* mp, const float* vp, const float* gp, const float* bp, int64_t C, float epsilon)
      : mean(C), scale(C), beta(C), invstd(C) {
    for (int64_t c = 0; c < C; ++c) {
      const Affine a = affine(mp[c], vp[c], gp[c], bp[c], epsilon);
      mean[c] = a.mean;
      scale[c] = a.scale;
      beta[c] = a.beta;
      invstd[c] = a.invstd;
    }
  }
};

// The channels-last forward: the same two passes as forward_channels, over rows instead of channel blocks.
template <int ACT>
void forward_rows(const float* xp, const float* gp, const float* bp, const float* rm, const float* rv, float* yp,
                  float* mp, float* vp, const Shape& s, float epsilon, bool training) {
  const int64_t rows = s.N, C = s.C;  // channels-last: N * H * W rows of C
  if (training) {
    std::vector<double> sum(C), sumsq(C);
    channel_sums(rows, C, [xp, C](int64_t r, int64_t c, double* a, double* b) {
      const double v = xp[r * C + c];
      *a = v;
      *b = v * v;
    }, sum.data(), sumsq.data());
    for (int64_t c = 0; c < C; ++c) {
      const double mean = sum[c] / rows;
      mp[c] = static_cast<float>(mean);
      vp[c] = static_cast<float>(std::max(sumsq[c] / rows - mean * mean, 0.0));
    }
  } else {
    std::copy(rm, rm + C, mp);
    std::copy(rv, rv + C, vp);
  }
  const ChannelAffine af(mp, vp, gp, bp, C, epsilon);
  const float* mu = af.mean.data();
  const float* sc = af.scale.data();
  const float* be = af.beta.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = xp + r * C;
    float* out = yp + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = activate<ACT>(pre_act(in[c], mu[c], sc[c], be[c]));
  }
}

// The channels-last backward: the same formula as backward_channels, its two passes over rows.
template <int ACT>
void backward_rows(const float* xp, const float* dyp, const float* gp, const float* bp, const float* mp,
                   const float* vp, float* dxp, float* dgp, float* dbp, const Shape& s, float epsilon,
                   bool training) {
  const int64_t rows = s.N, C = s.C;  // channels-last: N * H * W rows of C
  const ChannelAffine af(mp, vp, gp, bp, C, epsilon);
  const float* mu = af.mean.data();
  const float* sc = af.scale.data();
  const float* be = af.beta.data();
  std::vector<double> dz_total(C), dz_xc_total(C);
  channel_sums(rows, C, [=](int64_t r, int64_t c, double* a, double* b) {
    const float x = xp[r * C + c];
    const float dz = dyp[r * C + c] * mask<ACT>(pre_act(x, mu[c], sc[c], be[c]));
    *a = dz;
    *b = static_cast<double>(dz) * (x - mu[c]);
  }, dz_total.data(), dz_xc_total.data());
  std::vector<float> mean_dz(C), xc_coef(C);
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = af.invstd[c];
    dbp[c] = static_cast<float>(dz_total[c]);
    dgp[c] = static_cast<float>(dz_xc_total[c] * invstd);
    mean_dz[c] = training ? static_cast<float>(dz_total[c] / rows) : 0.f;
    xc_coef[c] = training ? static_cast<float>(dz_xc_total[c] * invstd * invstd / rows) : 0.f;
  }
  const float* md = mean_dz.data();
  const float* xk = xc_coef.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = xp + r * C;
    const float* g = dyp + r * C;
    float* out = dxp + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float dz = g[c] * mask<ACT>(pre_act(in[c], mu[c], sc[c], be[c]));
      out[c] = sc[c] * (dz - md[c] - (in[c] - mu[c]) * xk[c]);
    }
  }
}

}  // namespace

// Training: batch statistics; evaluation: the given running mean and variance.
// Returns Y, and the mean and variance it normalised with (biased variance, as paddle's batch_norm).
std::vector<paddle::Tensor> BatchNormActForward(const paddle::Tensor& x_in, const paddle::Tensor& gamma,
                                                const paddle::Tensor& beta, const paddle::Tensor& running_mean,
                                                const paddle::Tensor& running_var, float epsilon, bool training,
                                                int act, bool channels_last) {
  PD_CHECK(act >= kNone && act <= kRelu6, "act must be 0 (none), 1 (relu) or 2 (relu6)");
  paddle::Tensor x = x_in.contiguous();
  Shape s = shape_of(x, {&gamma, &beta, &running_mean, &running_var}, channels_last);
  auto y = paddle::empty(x.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto mean = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto var = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto run = channels_last ? (act == kRelu ? forward_rows<kRelu> : act == kRelu6 ? forward_rows<kRelu6>
                                                                                : forward_rows<kNone>)
                           : (act == kRelu ? forward_channels<kRelu> : act == kRelu6 ? forward_channels<kRelu6>
                                                                                     : forward_channels<kNone>);
  run(x.data<float>(), gamma.data<float>(), beta.data<float>(), running_mean.data<float>(),
      running_var.data<float>(), y.data<float>(), mean.data<float>(), var.data<float>(), s, epsilon, training);
  return {y, mean, var};
}

// dGamma = sum(dz * xhat), dBeta = sum(dz), with dz the output gradient masked by the activation; in
// training dX = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)), in evaluation gamma * invstd * dz.
std::vector<paddle::Tensor> BatchNormActBackward(const paddle::Tensor& x_in, const paddle::Tensor& gamma,
                                                 const paddle::Tensor& beta, const paddle::Tensor& mean,
                                                 const paddle::Tensor& var, const paddle::Tensor& dy_in,
                                                 float epsilon, bool training, int act, bool channels_last) {
  paddle::Tensor x = x_in.contiguous();
  paddle::Tensor dy = dy_in.contiguous();
  Shape s = shape_of(x, {&gamma, &beta, &mean, &var}, channels_last);
  PD_CHECK(dy.shape() == x.shape(), "mbnet batchnorm_act: the output gradient must have the input's shape");
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dgamma = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dbeta = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto run = channels_last ? (act == kRelu ? backward_rows<kRelu> : act == kRelu6 ? backward_rows<kRelu6>
                                                                                 : backward_rows<kNone>)
                           : (act == kRelu ? backward_channels<kRelu> : act == kRelu6 ? backward_channels<kRelu6>
                                                                                      : backward_channels<kNone>);
  run(x.data<float>(), dy.data<float>(), gamma.data<float>(), beta.data<float>(), mean.data<float>(),
      var.data<float>(), dx.data<float>(), dgamma.data<float>(), dbeta.data<float>(), s, epsilon, training);
  return {dx, dgamma, dbeta};
}

std::vector<std::vector<int64_t>> BatchNormActInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& g,
                                                         const std::vector<int64_t>&, const std::vector<int64_t>&,
                                                         const std::vector<int64_t>&) {
  return {x, g, g};
}

std::vector<paddle::DataType> BatchNormActInferDtype(const paddle::DataType& x, const paddle::DataType&,
                                                     const paddle::DataType&, const paddle::DataType&,
                                                     const paddle::DataType&) {
  return {x, x, x};
}

PD_BUILD_OP(mbnet_batchnorm_act)
    .Inputs({"X", "Scale", "Bias", "Mean", "Variance"})
    .Outputs({"Y", "SavedMean", "SavedVariance"})
    .Attrs({"epsilon: float", "training: bool", "act: int", "channels_last: bool"})
    .SetKernelFn(PD_KERNEL(BatchNormActForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BatchNormActInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BatchNormActInferDtype));

PD_BUILD_GRAD_OP(mbnet_batchnorm_act)
    .Inputs({"X", "Scale", "Bias", "SavedMean", "SavedVariance", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Bias")})
    .Attrs({"epsilon: float", "training: bool", "act: int", "channels_last: bool"})
    .SetKernelFn(PD_KERNEL(BatchNormActBackward));
