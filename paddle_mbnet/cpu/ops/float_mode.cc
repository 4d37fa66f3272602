// Flush-to-zero (FTZ) and denormals-are-zero (DAZ) for the calling thread and the threads of the OpenMP pool.
//
// Why an operator: the switch is two bits of each thread's MXCSR register, set by an instruction run on that
// thread, which Python cannot do. Paddle's CPU kernels run on the calling thread (the optimizer's update) and on
// the OpenMP pool (GEMMs, our operators), which this library shares (see _openmp_ldflags in __init__.py). Intel's
// runtime copies the calling thread's bits into the pool at each parallel region (KMP_INHERIT_FP_CONTROL, on by
// default); GCC's does not, so the bits are also set in a parallel region here.
//
// Input: any tensor (a custom operator needs one; it is not read). Attribute ``mode``: 0 = IEEE denormals,
// 1 = flush, 2 = only read. Output, int64: [the calling thread's FTZ|DAZ bits before, the same after, how many
// pool threads read back other bits than the calling thread's in a second parallel region that sets nothing].

#include <vector>

#include "paddle/extension.h"

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>

namespace {
constexpr unsigned int kModeBits = 0x8000 | 0x0040;  // MXCSR.FTZ: denormal results become 0; MXCSR.DAZ: inputs too
unsigned int read_bits() { return _mm_getcsr() & kModeBits; }
void set_bits(int mode) {
  if (mode == 0) _mm_setcsr(_mm_getcsr() & ~kModeBits);
  if (mode == 1) _mm_setcsr(_mm_getcsr() | kModeBits);
}
}  // namespace
#else
namespace {
unsigned int read_bits() { return 0; }  // not implemented for this architecture: reads as IEEE
void set_bits(int) {}
}  // namespace
#endif

std::vector<paddle::Tensor> FloatModeForward(const paddle::Tensor& unused, int mode) {
  const int64_t before = read_bits();
  set_bits(mode);
  const int64_t after = read_bits();
#pragma omp parallel
  { set_bits(mode); }
  int64_t differing = 0;
#pragma omp parallel reduction(+ : differing)
  { differing += read_bits() != after; }
  auto out = paddle::empty({3}, paddle::DataType::INT64, paddle::CPUPlace());
  int64_t* values = out.data<int64_t>();
  values[0] = before;
  values[1] = after;
  values[2] = differing;
  return {out};
}

std::vector<std::vector<int64_t>> FloatModeInferShape(const std::vector<int64_t>&) { return {{3}}; }

std::vector<paddle::DataType> FloatModeInferDtype(const paddle::DataType&) { return {paddle::DataType::INT64}; }

PD_BUILD_OP(mbnet_float_mode)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"mode: int"})
    .SetKernelFn(PD_KERNEL(FloatModeForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FloatModeInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FloatModeInferDtype));
