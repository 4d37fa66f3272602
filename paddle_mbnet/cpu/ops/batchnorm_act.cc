// BatchNorm followed by an activation (none, ReLU or ReLU6) for CPU, float32, NCHW, as one operator.
//
// Why: on CPU paddle runs batch_norm and the activation as separate kernels, each a few passes over the
// tensor, and together they were the largest share of a MobileNet training step after the convolutions
// (docs/performance.md). Here the forward is two passes (statistics, then normalise + affine + activation)
// and the backward two (the two per-channel sums, then the input gradient), with the activation's mask
// recomputed from the input instead of stored. OpenMP runs over channels, so each thread owns whole channels
// and needs no atomics. Sums are kept in double. The running statistics are updated by the caller (models/layers.py).
#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"

namespace {

enum Act { kNone = 0, kRelu = 1, kRelu6 = 2 };

struct Shape {
  int64_t N, C, HW;
};

// Checks the input and every per-channel tensor (float32, CPU, contiguous, one value per channel).
Shape shape_of(const paddle::Tensor& x, const std::vector<const paddle::Tensor*>& per_channel) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32, "mbnet batchnorm_act: float32 CPU input only");
  auto xs = x.shape();
  PD_CHECK(xs.size() >= 2, "input must be [N, C, ...]");
  Shape s{xs[0], xs[1], 1};
  for (size_t i = 2; i < xs.size(); ++i) s.HW *= xs[i];
  PD_CHECK(s.N * s.HW > 0, "mbnet batchnorm_act: the input has no values per channel");
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
inline float pre_act(float x, const Affine& a) { return std::fma(x - a.mean, a.scale, a.beta); }

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

void channel_moments(const float* x, const Shape& s, int64_t c, double* mean, double* var) {
  double sum = 0.0, sumsq = 0.0;
  for (int64_t n = 0; n < s.N; ++n) {
    const float* plane = x + (n * s.C + c) * s.HW;
#pragma omp simd reduction(+ : sum, sumsq)
    for (int64_t i = 0; i < s.HW; ++i) {
      double v = plane[i];
      sum += v;
      sumsq += v * v;
    }
  }
  double count = static_cast<double>(s.N * s.HW);
  *mean = sum / count;
  *var = std::max(sumsq / count - *mean * *mean, 0.0);
}

template <int ACT>
void forward_channels(const float* xp, const float* gp, const float* bp, const float* rm, const float* rv,
                      float* yp, float* mp, float* vp, const Shape& s, float epsilon, bool training) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.C; ++c) {
    double mu = rm[c], sigma2 = rv[c];
    if (training) channel_moments(xp, s, c, &mu, &sigma2);
    mp[c] = static_cast<float>(mu);
    vp[c] = static_cast<float>(sigma2);
    const Affine a = affine(mp[c], vp[c], gp[c], bp[c], epsilon);
    for (int64_t n = 0; n < s.N; ++n) {
      const float* in = xp + (n * s.C + c) * s.HW;
      float* out = yp + (n * s.C + c) * s.HW;
#pragma omp simd
      for (int64_t i = 0; i < s.HW; ++i) out[i] = activate<ACT>(pre_act(in[i], a));
    }
  }
}

template <int ACT>
void backward_channels(const float* xp, const float* dyp, const float* gp, const float* bp, const float* mp,
                       const float* vp, float* dxp, float* dgp, float* dbp, const Shape& s, float epsilon,
                       bool training) {
  const double count = static_cast<double>(s.N * s.HW);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.C; ++c) {
    const Affine a = affine(mp[c], vp[c], gp[c], bp[c], epsilon);
    const float mu = a.mean;
    const double invstd = a.invstd;
    double sum_dz = 0.0, sum_dz_xc = 0.0;  // xc = x - mean; xhat = xc * invstd
    for (int64_t n = 0; n < s.N; ++n) {
      const float* in = xp + (n * s.C + c) * s.HW;
      const float* g = dyp + (n * s.C + c) * s.HW;
#pragma omp simd reduction(+ : sum_dz, sum_dz_xc)
      for (int64_t i = 0; i < s.HW; ++i) {
        float dz = g[i] * mask<ACT>(pre_act(in[i], a));
        sum_dz += dz;
        sum_dz_xc += static_cast<double>(dz) * (in[i] - mu);
      }
    }
    dbp[c] = static_cast<float>(sum_dz);
    dgp[c] = static_cast<float>(sum_dz_xc * invstd);
    const float mean_dz = training ? static_cast<float>(sum_dz / count) : 0.f;
    const float xc_coef = training ? static_cast<float>(sum_dz_xc * invstd * invstd / count) : 0.f;
    for (int64_t n = 0; n < s.N; ++n) {
      const float* in = xp + (n * s.C + c) * s.HW;
      const float* g = dyp + (n * s.C + c) * s.HW;
      float* out = dxp + (n * s.C + c) * s.HW;
#pragma omp simd
      for (int64_t i = 0; i < s.HW; ++i) {
        float dz = g[i] * mask<ACT>(pre_act(in[i], a));
        out[i] = a.scale * (dz - mean_dz - (in[i] - mu) * xc_coef);  // a.scale = gamma * invstd
      }
    }
  }
}

}  // namespace

// Training: batch statistics; evaluation: the given running mean and variance.
// Returns Y, and the mean and variance it normalised with (biased variance, as paddle's batch_norm).
std::vector<paddle::Tensor> BatchNormActForward(const paddle::Tensor& x_in, const paddle::Tensor& gamma,
                                                const paddle::Tensor& beta, const paddle::Tensor& running_mean,
                                                const paddle::Tensor& running_var, float epsilon, bool training,
                                                int act) {
  PD_CHECK(act >= kNone && act <= kRelu6, "act must be 0 (none), 1 (relu) or 2 (relu6)");
  paddle::Tensor x = x_in.contiguous();
  Shape s = shape_of(x, {&gamma, &beta, &running_mean, &running_var});
  auto y = paddle::empty(x.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto mean = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto var = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto run = act == kRelu ? forward_channels<kRelu> : act == kRelu6 ? forward_channels<kRelu6>
                                                                    : forward_channels<kNone>;
  run(x.data<float>(), gamma.data<float>(), beta.data<float>(), running_mean.data<float>(),
      running_var.data<float>(), y.data<float>(), mean.data<float>(), var.data<float>(), s, epsilon, training);
  return {y, mean, var};
}

// dGamma = sum(dz * xhat), dBeta = sum(dz), with dz the output gradient masked by the activation; in
// training dX = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)), in evaluation gamma * invstd * dz.
std::vector<paddle::Tensor> BatchNormActBackward(const paddle::Tensor& x_in, const paddle::Tensor& gamma,
                                                 const paddle::Tensor& beta, const paddle::Tensor& mean,
                                                 const paddle::Tensor& var, const paddle::Tensor& dy_in,
                                                 float epsilon, bool training, int act) {
  paddle::Tensor x = x_in.contiguous();
  paddle::Tensor dy = dy_in.contiguous();
  Shape s = shape_of(x, {&gamma, &beta, &mean, &var});
  PD_CHECK(dy.shape() == x.shape(), "mbnet batchnorm_act: the output gradient must have the input's shape");
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dgamma = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dbeta = paddle::empty({s.C}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto run = act == kRelu ? backward_channels<kRelu> : act == kRelu6 ? backward_channels<kRelu6>
                                                                     : backward_channels<kNone>;
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
    .Attrs({"epsilon: float", "training: bool", "act: int"})
    .SetKernelFn(PD_KERNEL(BatchNormActForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BatchNormActInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BatchNormActInferDtype));

PD_BUILD_GRAD_OP(mbnet_batchnorm_act)
    .Inputs({"X", "Scale", "Bias", "SavedMean", "SavedVariance", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Bias")})
    .Attrs({"epsilon: float", "training: bool", "act: int"})
    .SetKernelFn(PD_KERNEL(BatchNormActBackward));
