#include "kernels/cuda/cuda_backend.h"

#include <fmt/format.h>

#include <stdexcept>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/dequantize_f16.h"
#include "kernels/cuda/packed_gemv.h"

namespace kvshrink::kernels::cuda {
namespace {

// A weight's device copy, tagged with its device so that a second backend on another GPU uploads
// its own.
struct DeviceWeight {
  int device;
  DeviceBuffer<std::byte> bytes;
};

}  // namespace

CudaBackend::CudaBackend(int node_local_rank) {
  std::string why_none;
  const auto devices = cuda_devices(&why_none);
  if (devices.empty()) throw std::runtime_error("--device cuda: no CUDA device (" + why_none + ")");
  if (node_local_rank < 0) throw std::invalid_argument("CudaBackend: a negative node-local rank");
  device_ = node_local_rank % static_cast<int>(devices.size());
  name_ = fmt::format("cuda:{} ({}; KV and attention on the host)", device_, devices[device_].name);
  select_device();
  KVSHRINK_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  cublas_ = std::make_unique<CublasHandle>(stream_);
}

CudaBackend::~CudaBackend() {
  cublas_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::select_device() const {
  KVSHRINK_CUDA_CHECK(cudaSetDevice(device_));
}

const std::byte* CudaBackend::device_weight(const Weight& w) {
  auto& copy = w.backend_copy();
  auto* uploaded = static_cast<DeviceWeight*>(copy.get());
  if (uploaded == nullptr || uploaded->device != device_) {
    auto fresh = std::make_shared<DeviceWeight>(DeviceWeight{device_, DeviceBuffer<std::byte>(w.bytes())});
    fresh->bytes.copy_from_host(w.row(0), w.bytes(), stream_);
    KVSHRINK_CUDA_CHECK(cudaStreamSynchronize(stream_));
    uploaded = fresh.get();
    copy = std::move(fresh);
  }
  return uploaded->bytes.data();
}

// y[m x rows] = x[m x cols] . w^T: x in, the GEMV or a cuBLAS GEMM, y out.
void CudaBackend::matmul(const Weight& w, const float* x, float* y, int64_t m) {
  if (m <= 0) return;
  select_device();
  const std::byte* weight = device_weight(w);
  const int64_t rows = w.rows(), cols = w.cols();
  const auto in = static_cast<size_t>(m * cols), out = static_cast<size_t>(m * rows);
  x_.reserve(in);
  y_.reserve(out);
  x_.copy_from_host(x, in, stream_);
  if (w.dtype() == TensorType::F32) {
    gemm_f32(*cublas_, reinterpret_cast<const float*>(weight), x_.data(), y_.data(), rows, cols, m);
  } else if (m <= kGemvMaxRows && packed_gemv_supports(w.dtype())) {
    packed_gemv(w.dtype(), weight, rows, cols, x_.data(), m, y_.data(), stream_);
  } else {
    w16_.reserve(static_cast<size_t>(rows * cols));
    x16_.reserve(in);
    dequantize_to_f16(w.dtype(), weight, rows, cols, w16_.data(), stream_);
    f32_to_f16(x_.data(), x16_.data(), static_cast<int64_t>(in), stream_);
    gemm_f16(*cublas_, w16_.data(), x16_.data(), y_.data(), rows, cols, m);
  }
  y_.copy_to_host(y, out, stream_);
  KVSHRINK_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// The rest runs on the host in this stage (see the header).
void CudaBackend::matmul_f32(const float* x, const float* b, float* y, int64_t m, int64_t n, int64_t k) {
  host_.matmul_f32(x, b, y, m, n, k);
}
void CudaBackend::rms_norm(const float* x, const float* gamma, float* y, int64_t m, int64_t n, float eps) {
  host_.rms_norm(x, gamma, y, m, n, eps);
}
void CudaBackend::rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                       float freq_base) {
  host_.rope(x, m, n_heads, head_dim, positions, freq_base);
}
void CudaBackend::silu_mul(float* gate, const float* up, int64_t count) {
  host_.silu_mul(gate, up, count);
}
void CudaBackend::add(float* y, const float* x, int64_t count) {
  host_.add(y, x, count);
}
void CudaBackend::attention(std::span<const HeadAttention> batch) {
  host_.attention(batch);
}
void CudaBackend::low_rank_attention(std::span<const LowRankAttention> batch) {
  host_.low_rank_attention(batch);
}
void CudaBackend::merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b,
                                  int64_t out_b_stride, const float* lse_b, int64_t m, int64_t group,
                                  int64_t head_dim) {
  host_.merge_attention(out, out_stride, lse, out_b, out_b_stride, lse_b, m, group, head_dim);
}
void CudaBackend::window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions,
                                        int64_t n_queries, int64_t group, int64_t head_dim, float scale,
                                        std::span<const KvBlockView> blocks, float* out) {
  host_.window_attention_mean(q, q_stride, q_positions, n_queries, group, head_dim, scale, blocks, out);
}
void CudaBackend::embedding_rows(const Weight& w, const int32_t* tokens, int64_t n, float* out) {
  host_.embedding_rows(w, tokens, n, out);
}
void* CudaBackend::allocate_kv_memory(uint64_t bytes) {
  return host_.allocate_kv_memory(bytes);
}
void CudaBackend::free_kv_memory(void* memory, uint64_t bytes) {
  host_.free_kv_memory(memory, bytes);
}

}  // namespace kvshrink::kernels::cuda
