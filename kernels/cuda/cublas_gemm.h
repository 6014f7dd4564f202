// The prefill matmuls on cuBLAS: y[m x rows] = x[m x cols] . w^T with every matrix row-major in
// device memory, as Backend::matmul lays them out. cuBLAS is column-major, so each call computes
// y^T = w . x^T: w read transposed (CUBLAS_OP_T, leading dimension cols), x^T and y^T as they lie.
// The handle carries the stream; each call returns once the GEMM is queued.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace kvshrink::kernels::cuda {

// An owning cuBLAS handle bound to `stream` (default math mode: no TF32 for the f32 GEMM).
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// f16 operands, f32 output and accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F): w [rows x cols],
// x [m x cols], y [m x rows]. Throws std::runtime_error naming the cuBLAS status.
void gemm_f16(const CublasHandle& cublas, const __half* w, const __half* x, float* y, int64_t rows,
              int64_t cols, int64_t m);

// All f32 (cublasSgemm): the same shapes.
void gemm_f32(const CublasHandle& cublas, const float* w, const float* x, float* y, int64_t rows,
              int64_t cols, int64_t m);

}  // namespace kvshrink::kernels::cuda
