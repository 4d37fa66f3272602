// Flush-to-zero and denormals-are-zero for the calling thread and every thread of the OpenMP pool.
//
// Why an operator: the switch is a bit in each thread's MXCSR register, so it has to be set by code running on
// each thread, which Python cannot do. Paddle's CPU kernels run on the main thread (the optimizer's update) and on
// the OpenMP pool (GEMMs, our operators); this library shares that pool (see _openmp_ldflags in __init__.py).
// Threads created later copy the MXCSR of the thread that creates them.
//
// The operator returns [the main thread's FTZ|DAZ bits as read back, the number of pool threads whose bits differ],
// so callers can check that the switch took everywhere.

#include <omp.h>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define MBNET_HAS_MXCSR 1
#endif

#include <vector>

#include "paddle/extension.h"

namespace {

#ifdef MBNET_HAS_MXCSR
constexpr unsigned int kFlushToZero = 0x8000;       // MXCSR.FTZ: denormal results become 0
constexpr unsigned int kDenormalsAreZero = 0x0040;  // MXCSR.DAZ: denormal inputs read as 0

unsigned int set_mode(bool flush) {
  unsigned int csr = _mm_getcsr();
  csr = flush ? (csr | kFlushToZero | kDenormalsAreZero) : (csr & ~(kFlushToZero | kDenormalsAreZero));
  _mm_setcsr(csr);
  return _mm_getcsr() & (kFlushToZero | kDenormalsAreZero);
}
#else
unsigned int set_mode(bool) { return 0; }
#endif

}  // namespace

std::vector<paddle::Tensor> FloatModeForward(const paddle::Tensor& x, bool flush) {
  unsigned int main_csr = set_mode(flush);
  int mismatches = 0;
#pragma omp parallel reduction(+ : mismatches)
  {
    mismatches += set_mode(flush) != main_csr;
  }
  auto out = paddle::empty({2}, paddle::DataType::INT64, paddle::CPUPlace());
  out.data<int64_t>()[0] = static_cast<int64_t>(main_csr);
  out.data<int64_t>()[1] = mismatches;
  return {out};
}

std::vector<std::vector<int64_t>> FloatModeInferShape(const std::vector<int64_t>&) { return {{2}}; }

std::vector<paddle::DataType> FloatModeInferDtype(const paddle::DataType&) { return {paddle::DataType::INT64}; }

PD_BUILD_OP(mbnet_float_mode)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"flush: bool"})
    .SetKernelFn(PD_KERNEL(FloatModeForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FloatModeInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FloatModeInferDtype));
