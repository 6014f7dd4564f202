// The CUDA backend, first stage: the weights live on the device, uploaded at their first use in
// their GGUF packing and kept there, and every Backend::matmul runs there: decode rows
// (m <= kGemvMaxRows) in the dequantizing GEMV (packed_gemv.h), longer runs of rows dequantized to
// f16 for cuBLAS with f32 accumulation (cublas_gemm.h), F32 weights on cublasSgemm.
//
// In this stage the Backend's arrays are host memory, as the engine holds them: each matmul copies
// its x rows in and its y rows out. The KV memory, attention, the segment merge, press scoring,
// norms, RoPE, the elementwise ops and embedding rows run on the host through the CPU backend, the
// KV in host memory (llama.cpp's --no-kv-offload). Their device kernels are in kernels/cuda/ and
// take over when the engine keeps its activations and KV pool in device memory.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cublas_gemm.h"
#include "kernels/cuda/device_buffer.h"

namespace kvshrink::kernels::cuda {

class CudaBackend final : public Backend {
 public:
  // On CUDA device node_local_rank % (devices on this node), the rank's GPU as the data plane
  // chooses it (comm/data_plane_choice.h). Throws std::runtime_error when there is no device
  // (saying why).
  explicit CudaBackend(int node_local_rank);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string_view name() const override { return name_; }
  void matmul(const Weight& w, const float* x, float* y, int64_t m) override;
  void matmul_f32(const float* x, const float* b, float* y, int64_t m, int64_t n, int64_t k) override;
  void rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) override;
  void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
            float freq_base) override;
  void silu_mul(float* gate, const float* up, int64_t count) override;
  void add(float* y, const float* x, int64_t count) override;
  using Backend::attention;
  using Backend::low_rank_attention;
  void attention(std::span<const HeadAttention> batch) override;
  void low_rank_attention(std::span<const LowRankAttention> batch) override;
  void merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b, int64_t out_b_stride,
                       const float* lse_b, int64_t m, int64_t group, int64_t head_dim) override;
  void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions, int64_t n_queries,
                             int64_t group, int64_t head_dim, float scale,
                             std::span<const KvBlockView> blocks, float* out) override;
  void embedding_rows(const Weight& w, const int32_t* tokens, int64_t n, float* out) override;
  void* allocate_kv_memory(uint64_t bytes) override;
  void free_kv_memory(void* memory, uint64_t bytes) override;

 private:
  // A weight's bytes on this backend's device (Weight::backend_copy), uploaded at its first use.
  const std::byte* device_weight(const Weight& w);
  void select_device() const;  // makes device_ current on the calling thread

  int device_ = 0;  // the CUDA device index
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CublasHandle> cublas_;
  cpu::CpuBackend host_;  // what runs on the host in this stage
  // Scratch of the matmuls, grown as needed: the x rows, the y rows, f16 copies of the weight and
  // of x for cuBLAS.
  DeviceBuffer<float> x_{0};
  DeviceBuffer<float> y_{0};
  DeviceBuffer<__half> w16_{0};
  DeviceBuffer<__half> x16_{0};
};

}  // namespace kvshrink::kernels::cuda
