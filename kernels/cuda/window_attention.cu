#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kv_elements.cuh"
#include "kernels/cuda/window_attention.h"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxDim = static_cast<int>(kAttentionMaxHeadDim);
constexpr int kPadded = kMaxDim + 1;  // shared row stride: rows read at one column hit distinct banks
constexpr int kDimsPerLane = kMaxDim / kWarp;
constexpr int kLseWarps = 4, kLseThreads = kLseWarps * kWarp;
// Token kernel: kTileTokens tokens x kTileRows (query, head) rows per step, kRowLanes threads per token.
constexpr int kTileTokens = 32, kTileRows = 32, kTokenThreads = 256;
constexpr int kRowLanes = kTokenThreads / kTileTokens;

// exp(from - to) for to >= from; 0 when from is -inf (a state over no token).
__device__ float rescale(float from, float to) {
  return from == -INFINITY ? 0.0f : expf(from - to);
}

// Sum of v over the warp, to every lane.
__device__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The query rows: row r = i * group + j is query i's head j.
struct Queries {
  const float* q;
  int64_t q_stride;
  const int32_t* q_positions;
  int64_t group, head_dim;
  float scale;
};

// Grid (row), a warp per every 4th token of each block: lse[row] = log sum over the tokens the row
// sees of exp(scale * q . k_t) (-inf when none).
__global__ void __launch_bounds__(kLseThreads)
    window_lse_kernel(Queries rows, const KvBlockView* blocks, int64_t n_blocks, float* lse) {
  const int64_t i = blockIdx.x / rows.group, head = blockIdx.x % rows.group, d = rows.head_dim;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float q[kDimsPerLane];
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int k = lane + c * kWarp;
    q[c] = k < d ? rows.scale * rows.q[i * rows.q_stride + head * d + k] : 0.0f;
  }
  const int32_t last = rows.q_positions[i];
  float max = -INFINITY, sum = 0.0f;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const KvBlockView block = blocks[b];
    if (block.n > 0 && block.positions[0] > last) break;  // positions ascend
    for (int64_t t = warp; t < block.n && block.positions[t] <= last; t += kLseWarps) {
      const KvRow key{block.keys, t * d, block.dtype};
      float dot = 0.0f;
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int k = lane + c * kWarp;
        if (k < d) dot += q[c] * key[k];
      }
      const float score = warp_sum(dot), new_max = fmaxf(max, score);
      sum = sum * rescale(max, new_max) + expf(score - new_max);
      max = new_max;
    }
  }
  __shared__ float maxes[kLseWarps], sums[kLseWarps];
  if (lane == 0) {
    maxes[warp] = max;
    sums[warp] = sum;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  float top = -INFINITY, total = 0.0f;
  for (int w = 0; w < kLseWarps; ++w) top = fmaxf(top, maxes[w]);
  for (int w = 0; w < kLseWarps; ++w) total += sums[w] * rescale(maxes[w], top);
  lse[blockIdx.x] = top == -INFINITY ? -INFINITY : top + logf(total);
}

// Tokens [first, first + count) of block `block`, written at out[out_offset ..].
struct TokenTile {
  int64_t block, first, count, out_offset;
};

struct TokenTiles {
  float keys[kTileTokens][kPadded];
  float queries[kTileRows][kPadded];  // this step's rows, times scale
  float row_lse[kTileRows];           // -inf: the row adds nothing (sees no token, or past the rows)
  int32_t row_positions[kTileRows];
  int32_t token_positions[kTileTokens];
  float partial[kRowLanes][kTileTokens];
};

// Rows [first, first + kTileRows) of the n_rows into the step's tiles.
__device__ void load_rows(const Queries& rows, int64_t first, int64_t n_rows, const float* lse,
                          TokenTiles& s) {
  const int64_t d = rows.head_dim;
  for (int64_t i = threadIdx.x; i < kTileRows * d; i += kTokenThreads) {
    const int64_t r = first + i / d, k = i % d;
    s.queries[i / d][k] =
        r < n_rows ? rows.scale * rows.q[(r / rows.group) * rows.q_stride + (r % rows.group) * d + k] : 0.0f;
  }
  if (threadIdx.x < kTileRows) {
    const int64_t r = first + threadIdx.x;
    s.row_lse[threadIdx.x] = r < n_rows ? lse[r] : -INFINITY;
    s.row_positions[threadIdx.x] = r < n_rows ? rows.q_positions[r / rows.group] : 0;
  }
}

// Grid (tile): out[t] = sum over the rows that see token t of exp(score - row lse), over n_rows.
__global__ void __launch_bounds__(kTokenThreads)
    window_token_kernel(Queries rows, int64_t n_rows, const KvBlockView* blocks, const TokenTile* tiles,
                        const float* lse, float* out) {
  const TokenTile tile = tiles[blockIdx.x];
  const KvBlockView block = blocks[tile.block];
  const int d = static_cast<int>(rows.head_dim), count = static_cast<int>(tile.count);
  __shared__ TokenTiles s;
  for (int i = threadIdx.x; i < count * d; i += kTokenThreads)
    s.keys[i / d][i % d] = kv_element(block.keys, block.dtype, (tile.first + i / d) * d + i % d);
  if (threadIdx.x < count) s.token_positions[threadIdx.x] = block.positions[tile.first + threadIdx.x];
  const int token = threadIdx.x % kTileTokens, lane = threadIdx.x / kTileTokens;
  float mean = 0.0f;
  for (int64_t first = 0; first < n_rows; first += kTileRows) {
    __syncthreads();  // the previous step's rows are consumed (and, first, the keys are in)
    load_rows(rows, first, n_rows, lse, s);
    __syncthreads();
    for (int r = lane; r < kTileRows && token < count; r += kRowLanes) {
      if (s.row_lse[r] == -INFINITY || s.token_positions[token] > s.row_positions[r]) continue;
      float dot = 0.0f;
      for (int k = 0; k < d; ++k) dot += s.queries[r][k] * s.keys[token][k];
      mean += expf(dot - s.row_lse[r]);
    }
  }
  s.partial[lane][token] = mean;
  __syncthreads();
  if (threadIdx.x >= count) return;
  float total = 0.0f;
  for (int l = 0; l < kRowLanes; ++l) total += s.partial[l][threadIdx.x];
  out[tile.out_offset + threadIdx.x] = total / static_cast<float>(n_rows);
}

// A device array from the stream's memory pool, filled from host memory and freed in stream order.
template <class T>
class StreamArray {
 public:
  StreamArray(const T* host, size_t count, cudaStream_t stream) : stream_(stream) {
    if (count == 0) return;
    KVSHRINK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&data_), count * sizeof(T), stream));
    if (host)
      KVSHRINK_CUDA_CHECK(cudaMemcpyAsync(data_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  ~StreamArray() {
    if (data_) cudaFreeAsync(data_, stream_);
  }
  StreamArray(const StreamArray&) = delete;
  StreamArray& operator=(const StreamArray&) = delete;
  T* data() const { return data_; }

 private:
  T* data_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace

void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions, int64_t n_queries,
                           int64_t group, int64_t head_dim, float scale, const KvBlockView* blocks,
                           int64_t n_blocks, float* out, cudaStream_t stream) {
  const auto refuse = [](const std::string& why) {
    throw std::invalid_argument("cuda window attention: " + why);
  };
  if (head_dim < 1 || head_dim > kAttentionMaxHeadDim)
    refuse("head_dim " + std::to_string(head_dim) + " (1.." + std::to_string(kAttentionMaxHeadDim) +
           " taken)");
  if (n_queries < 0 || group < 1 || n_blocks < 0 || n_queries * group > INT_MAX)
    refuse("query count " + std::to_string(n_queries) + ", group " + std::to_string(group));
  const KvBlockView* views = blocks;  // host array of device pointers
  std::vector<TokenTile> tiles;       // (host) the tiles of every block, in token order
  int64_t n = 0;
  for (int64_t b = 0; b < n_blocks; ++b) {
    for (int64_t first = 0; first < views[b].n; first += kTileTokens)
      tiles.push_back({b, first, std::min<int64_t>(kTileTokens, views[b].n - first), n + first});
    n += views[b].n;
  }
  if (n == 0) return;
  if (n_queries == 0) {  // a mean over no query: 0, as the CPU backend
    KVSHRINK_CUDA_CHECK(cudaMemsetAsync(out, 0, n * sizeof(float), stream));
    return;
  }
  const StreamArray<KvBlockView> device_views(views, n_blocks, stream);
  const StreamArray<TokenTile> device_tiles(tiles.data(), tiles.size(), stream);
  const int64_t n_rows = n_queries * group;
  const StreamArray<float> lse(nullptr, n_rows, stream);
  const Queries rows{q, q_stride, q_positions, group, head_dim, scale};
  window_lse_kernel<<<static_cast<unsigned>(n_rows), kLseThreads, 0, stream>>>(rows, device_views.data(),
                                                                               n_blocks, lse.data());
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
  window_token_kernel<<<static_cast<unsigned>(tiles.size()), kTokenThreads, 0, stream>>>(
      rows, n_rows, device_views.data(), device_tiles.data(), lse.data(), out);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kvshrink::kernels::cuda
