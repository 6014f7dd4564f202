#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cublas_gemm.h"

namespace kvshrink::kernels::cuda {
namespace {

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string(call) + ": " + cublasGetStatusString(status));
  }
}

int as_int(int64_t n, const char* what) {  // cuBLAS takes int dimensions
  if (n < 0 || n > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string("cuBLAS GEMM: ") + what + " = " + std::to_string(n) +
                                " outside the int range");
  }
  return static_cast<int>(n);
}

}  // namespace

CublasHandle::CublasHandle(cudaStream_t stream) {
  check(cublasCreate(&handle_), "cublasCreate");
  check(cublasSetStream(handle_, stream), "cublasSetStream");
}

CublasHandle::~CublasHandle() {
  if (handle_) cublasDestroy(handle_);
}

void gemm_f16(const CublasHandle& cublas, const __half* w, const __half* x, float* y, int64_t rows,
              int64_t cols, int64_t m) {
  const float one = 1.0f, zero = 0.0f;
  const int n_rows = as_int(rows, "rows"), n_cols = as_int(cols, "cols"), n_m = as_int(m, "m");
  // y^T [rows x m] = (w^T)^T [rows x cols] . x^T [cols x m], column-major
  check(cublasGemmEx(cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, n_rows, n_m, n_cols, &one, w, CUDA_R_16F, n_cols,
                     x, CUDA_R_16F, n_cols, &zero, y, CUDA_R_32F, n_rows, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}

void gemm_f32(const CublasHandle& cublas, const float* w, const float* x, float* y, int64_t rows,
              int64_t cols, int64_t m) {
  const float one = 1.0f, zero = 0.0f;
  const int n_rows = as_int(rows, "rows"), n_cols = as_int(cols, "cols"), n_m = as_int(m, "m");
  check(cublasSgemm(cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, n_rows, n_m, n_cols, &one, w, n_cols, x, n_cols,
                    &zero, y, n_rows),
        "cublasSgemm");
}

}  // namespace kvshrink::kernels::cuda
