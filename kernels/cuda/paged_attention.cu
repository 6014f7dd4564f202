#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kv_elements.cuh"
#include "kernels/cuda/paged_attention.h"

namespace kvshrink::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxDim = static_cast<int>(kAttentionMaxHeadDim);
constexpr int kPadded = kMaxDim + 1;  // shared row stride: rows read at one column hit distinct banks
constexpr int64_t kMaxGridYZ = 65535;

// Prefill: a step takes kTileTokens tokens for kTileQueries queries, kThreadsPerQuery threads each
// (a query's threads are adjacent lanes of one warp; each holds every 8th output dimension).
constexpr int kTileQueries = 32, kTileTokens = 16, kThreadsPerQuery = 8;
constexpr int kPrefillThreads = kTileQueries * kThreadsPerQuery;
constexpr int kRowDims = kMaxDim / kThreadsPerQuery;
constexpr int kScoresPerThread = kTileTokens / kThreadsPerQuery;

// Decode: kDecodeWarps warps per chunk, each over a quarter of it, a lane holding dims lane + 32c.
constexpr int kDecodeWarps = 4, kDecodeThreads = kDecodeWarps * kWarp;
constexpr int kDimsPerLane = kMaxDim / kWarp;
constexpr int64_t kMinChunk = 256;             // tokens: shorter chunks cost more to combine than they save
constexpr int64_t kMaxSplits = 64;             // chunks per call at most
constexpr int64_t kDecodeTargetBlocks = 1024;  // enough thread blocks to fill an H100 / H200 several times

// Mass: kMassTokens tokens x kMassRows query rows per thread block; kRowLanes threads per token.
constexpr int kMassTokens = 32, kMassRows = 32, kMassThreads = 256;
constexpr int kRowLanes = kMassThreads / kMassTokens;

__host__ __device__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// exp(from - to) for to >= from; 0 when from is -inf (a state over no token).
__device__ float rescale(float from, float to) {
  return from == -INFINITY ? 0.0f : expf(from - to);
}

// Sum of v over the warp, to every lane.
__device__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Max / sum over the kThreadsPerQuery lanes of one prefill query row, to each of them.
__device__ float row_max(float v) {
  for (int offset = kThreadsPerQuery / 2; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
__device__ float row_sum(float v) {
  for (int offset = kThreadsPerQuery / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Whether the call is within the batch's shape (the kernels skip one that is not).
__device__ bool fits(const HeadAttention& a, const AttentionBatchShape& shape) {
  return a.head_dim >= 1 && a.head_dim <= shape.max_head_dim && a.group <= shape.max_group &&
         a.m <= shape.max_m;
}

// A call's token: its block and offset there; block == n_blocks past the last token.
struct TokenAt {
  int64_t block, offset;
};

// The call's token `index`, counting across its blocks in order.
__device__ TokenAt token_at(const HeadAttention& a, int64_t index) {
  int64_t b = 0;
  while (b < a.n_blocks && index >= a.blocks[b].n) index -= a.blocks[b++].n;
  return {b, index};
}

__device__ void next_token(const HeadAttention& a, TokenAt& at) {
  ++at.offset;
  while (at.block < a.n_blocks && at.offset >= a.blocks[at.block].n) {
    ++at.block;
    at.offset = 0;
  }
}

// ---- prefill ----

struct PrefillTiles {
  float q[kTileQueries][kPadded];          // the tile's query rows, times scale
  float k[kTileTokens][kPadded];           // this step's keys
  float v[kTileTokens][kMaxDim];           // and values
  float p[kTileQueries][kTileTokens + 1];  // exp(score - running max) of this step
  int32_t q_positions[kTileQueries];       // INT_MIN past the call's queries: they see nothing
  int32_t k_positions[kTileTokens];
};

// A query row's online softmax: running max, sum of exp(score - max), and the thread's output
// dims (lane + 8c) weighted by exp(score - max).
struct RowState {
  float max = -INFINITY, sum = 0.0f;
  float acc[kRowDims] = {};
};

// Tokens [first, first + count) of `block` into the step's tiles (count <= kTileTokens).
__device__ void load_kv_tile(PrefillTiles& s, const KvBlockView& block, int64_t first, int count, int d,
                             bool values) {
  for (int i = threadIdx.x; i < count * d; i += kPrefillThreads) {
    const int t = i / d, k = i % d;
    s.k[t][k] = kv_element(block.keys, block.dtype, (first + t) * d + k);
    if (values) s.v[t][k] = kv_element(block.values, block.dtype, (first + t) * d + k);
  }
  if (threadIdx.x < count) s.k_positions[threadIdx.x] = block.positions[first + threadIdx.x];
}

// One step for the thread's query row: its scores of the tile's count tokens (tokens lane and
// lane + 8), the online-softmax update, then the values.
__device__ void attend_tile(PrefillTiles& s, RowState& st, int count, int d, bool values) {
  const int row = threadIdx.x / kThreadsPerQuery, lane = threadIdx.x % kThreadsPerQuery;
  float score[kScoresPerThread];
  float tile_max = -INFINITY;
#pragma unroll
  for (int c = 0; c < kScoresPerThread; ++c) {
    const int t = lane + c * kThreadsPerQuery;
    float dot = 0.0f;
    for (int k = 0; k < d; ++k) dot += s.q[row][k] * s.k[t][k];
    score[c] = t < count && s.k_positions[t] <= s.q_positions[row] ? dot : -INFINITY;
    tile_max = fmaxf(tile_max, score[c]);
  }
  const float new_max = fmaxf(st.max, row_max(tile_max));
  const float correction = rescale(st.max, new_max);
  float p_sum = 0.0f;
#pragma unroll
  for (int c = 0; c < kScoresPerThread; ++c) {
    const float p = score[c] == -INFINITY ? 0.0f : expf(score[c] - new_max);
    s.p[row][lane + c * kThreadsPerQuery] = p;
    p_sum += p;
  }
  st.sum = st.sum * correction + row_sum(p_sum);
  st.max = new_max;
  __syncwarp();  // the row's p, written by its lanes of this warp
  if (!values) return;
#pragma unroll
  for (int c = 0; c < kRowDims; ++c) {
    const int k = lane + c * kThreadsPerQuery;
    if (k >= d) continue;
    float acc = st.acc[c] * correction;
    for (int t = 0; t < count; ++t) acc += s.p[row][t] * s.v[t][k];
    st.acc[c] = acc;
  }
}

// Query i's out and lse for `head` from its row state (lse also into the mass pass's scratch).
__device__ void finish_row(const HeadAttention& a, const RowState& st, int64_t i, int64_t head,
                           float* lse_scratch) {
  const int lane = threadIdx.x % kThreadsPerQuery;
  const bool seen = st.max != -INFINITY;
  if (lane == 0) {
    const float lse = seen ? st.max + logf(st.sum) : -INFINITY;
    if (a.lse) a.lse[i * a.group + head] = lse;
    if (lse_scratch) lse_scratch[i * a.group + head] = lse;
  }
  if (!a.out) return;
  const float inv_sum = seen ? 1.0f / st.sum : 0.0f;
#pragma unroll
  for (int c = 0; c < kRowDims; ++c) {
    const int64_t k = lane + c * kThreadsPerQuery;
    if (k < a.head_dim) a.out[i * a.out_stride + head * a.head_dim + k] = st.acc[c] * inv_sum;
  }
}

// Grid (call, query tile, head). Tokens past the tile's last query position are not read
// (positions ascend).
__global__ void __launch_bounds__(kPrefillThreads)
    prefill_kernel(const HeadAttention* calls, AttentionBatchShape shape, float* lse_scratch) {
  const HeadAttention a = calls[blockIdx.x];
  const int64_t first_query = blockIdx.y * static_cast<int64_t>(kTileQueries), head = blockIdx.z;
  if (a.m <= 1 || !fits(a, shape) || first_query >= a.m || head >= a.group) return;
  __shared__ PrefillTiles s;
  const int d = static_cast<int>(a.head_dim);
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTileQueries), a.m - first_query));
  for (int i = threadIdx.x; i < kTileQueries * d; i += kPrefillThreads) {
    const int r = i / d, k = i % d;
    s.q[r][k] = r < rows ? a.scale * a.q[(first_query + r) * a.q_stride + head * d + k] : 0.0f;
  }
  if (threadIdx.x < kTileQueries)
    s.q_positions[threadIdx.x] = threadIdx.x < rows ? a.q_positions[first_query + threadIdx.x] : INT_MIN;
  __syncthreads();
  int32_t last = INT_MIN;
  for (int r = 0; r < rows; ++r) last = max(last, s.q_positions[r]);
  const bool values = a.out != nullptr;
  RowState st;
  bool done = false;
  for (int64_t b = 0; b < a.n_blocks && !done; ++b) {
    const KvBlockView block = a.blocks[b];
    for (int64_t first = 0; first < block.n; first += kTileTokens) {
      if (block.positions[first] > last) {
        done = true;
        break;
      }
      const int count = static_cast<int>(min(static_cast<int64_t>(kTileTokens), block.n - first));
      __syncthreads();  // the previous step's tiles are consumed
      load_kv_tile(s, block, first, count, d, values);
      __syncthreads();
      attend_tile(s, st, count, d, values);
    }
  }
  const int row = threadIdx.x / kThreadsPerQuery;
  if (row < rows)
    finish_row(a, st, first_query + row, head,
               lse_scratch ? lse_scratch + blockIdx.x * shape.max_m * shape.max_group : nullptr);
}

// ---- decode (flash-decoding) ----

// A warp's online softmax over its tokens: max score, sum of exp(score - max), and the lane's
// value dims (lane + 32c) weighted by exp(score - max).
struct WarpState {
  float max = -INFINITY, sum = 0.0f;
  float acc[kDimsPerLane] = {};
};

// The warp's state over the call's tokens [begin, end) that its query sees: positions ascend, so
// the first unseen token ends the run. q: the lane's dims of the query head, times scale.
__device__ WarpState decode_tokens(const HeadAttention& a, const float (&q)[kDimsPerLane], int64_t begin,
                                   int64_t end) {
  const int lane = threadIdx.x % kWarp;
  const int64_t d = a.head_dim;
  const int32_t last = a.q_positions[0];
  WarpState st;
  TokenAt at = token_at(a, begin);
  for (int64_t t = begin; t < end && at.block < a.n_blocks; ++t, next_token(a, at)) {
    const KvBlockView& block = a.blocks[at.block];
    if (block.positions[at.offset] > last) break;
    const KvRow key{block.keys, at.offset * d, block.dtype};
    float dot = 0.0f;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int k = lane + c * kWarp;
      if (k < d) dot += q[c] * key[k];
    }
    const float score = warp_sum(dot);
    const float new_max = fmaxf(st.max, score);
    const float correction = rescale(st.max, new_max), p = expf(score - new_max);
    st.sum = st.sum * correction + p;
    st.max = new_max;
    if (!a.out) continue;
    const KvRow value{block.values, at.offset * d, block.dtype};
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int k = lane + c * kWarp;
      if (k < d) st.acc[c] = st.acc[c] * correction + p * value[k];
    }
  }
  return st;
}

// The thread block's warp states merged into one partial: stats = (max, sum), sums[d].
__device__ void write_partial(const WarpState& st, int d, float* stats, float* sums) {
  __shared__ float maxes[kDecodeWarps], totals[kDecodeWarps], accs[kDecodeWarps][kMaxDim];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) {
    maxes[warp] = st.max;
    totals[warp] = st.sum;
  }
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) accs[warp][lane + c * kWarp] = st.acc[c];
  __syncthreads();
  float top = -INFINITY;
  for (int w = 0; w < kDecodeWarps; ++w) top = fmaxf(top, maxes[w]);
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kDecodeWarps; ++w) total += totals[w] * rescale(maxes[w], top);
    stats[0] = top;
    stats[1] = total;
  }
  for (int k = threadIdx.x; k < d; k += kDecodeThreads) {
    float sum = 0.0f;
    for (int w = 0; w < kDecodeWarps; ++w) sum += accs[w][k] * rescale(maxes[w], top);
    sums[k] = sum;
  }
}

// Grid (call, split, head): the partial of the call's tokens [split * chunk, + chunk). Partial
// (call, split, head) at index p = (call * splits + split) * max_group + head: stats[2p..2p+1],
// sums[p * max_head_dim ..].
__global__ void __launch_bounds__(kDecodeThreads)
    decode_split_kernel(const HeadAttention* calls, AttentionBatchShape shape, int64_t chunk, float* stats,
                        float* sums) {
  const HeadAttention a = calls[blockIdx.x];
  const int64_t split = blockIdx.y, head = blockIdx.z;
  if (a.m != 1 || !fits(a, shape) || head >= a.group) return;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int d = static_cast<int>(a.head_dim);
  float q[kDimsPerLane];
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int k = lane + c * kWarp;
    q[c] = k < d ? a.scale * a.q[head * d + k] : 0.0f;
  }
  const int64_t per_warp = ceil_div(chunk, kDecodeWarps);
  const int64_t begin = split * chunk + warp * per_warp;
  const int64_t end = min(split * chunk + chunk, begin + per_warp);
  const WarpState st = decode_tokens(a, q, begin, end);
  const int64_t partial = (blockIdx.x * static_cast<int64_t>(gridDim.y) + split) * shape.max_group + head;
  write_partial(st, d, stats + 2 * partial, sums + partial * shape.max_head_dim);
}

// Grid (call, head), a thread per dim: the call's partials combined into out and lse.
__global__ void __launch_bounds__(kMaxDim)
    decode_combine_kernel(const HeadAttention* calls, AttentionBatchShape shape, int64_t splits,
                          const float* stats, const float* sums, float* lse_scratch) {
  const HeadAttention a = calls[blockIdx.x];
  const int64_t head = blockIdx.y;
  if (a.m != 1 || !fits(a, shape) || head >= a.group) return;
  const int64_t first = blockIdx.x * splits * shape.max_group + head, step = shape.max_group;
  float top = -INFINITY;
  for (int64_t k = 0; k < splits; ++k) top = fmaxf(top, stats[2 * (first + k * step)]);
  const int dim = threadIdx.x;
  float total = 0.0f, value = 0.0f;
  for (int64_t k = 0; k < splits; ++k) {
    const int64_t p = first + k * step;
    const float weight = rescale(stats[2 * p], top);
    total += weight * stats[2 * p + 1];
    if (dim < a.head_dim) value += weight * sums[p * shape.max_head_dim + dim];
  }
  const bool seen = top != -INFINITY;
  if (threadIdx.x == 0) {
    const float lse = seen ? top + logf(total) : -INFINITY;
    if (a.lse) a.lse[head] = lse;
    if (lse_scratch) lse_scratch[blockIdx.x * shape.max_m * shape.max_group + head] = lse;
  }
  if (a.out && dim < a.head_dim) a.out[head * a.head_dim + dim] = seen ? value / total : 0.0f;
}

// ---- mass ----

struct MassTiles {
  float keys[kMassTokens][kPadded];
  float queries[kMassRows][kPadded];  // query rows r = i * group + j (token i, head j), times scale
  float row_lse[kMassRows];           // their log-denominators; -inf: the row adds nothing
  int32_t row_positions[kMassRows];
  KvRow token_keys[kMassTokens];  // the tokens' keys in their blocks
  float* token_mass[kMassTokens];
  int32_t token_positions[kMassTokens];
  int token_count;  // tokens of the tile within the call
  float partial[kRowLanes][kMassTokens];
};

// Thread 0: the call's tokens [first, first + kMassTokens) into the tile's token arrays.
__device__ void find_mass_tokens(const HeadAttention& a, int64_t first, MassTiles& s) {
  TokenAt at = token_at(a, first);
  int count = 0;
  for (; count < kMassTokens && at.block < a.n_blocks; ++count, next_token(a, at)) {
    const KvBlockView& block = a.blocks[at.block];
    s.token_keys[count] = {block.keys, at.offset * a.head_dim, block.dtype};
    s.token_mass[count] = block.mass + at.offset;
    s.token_positions[count] = block.positions[at.offset];
  }
  s.token_count = count;
}

// Query rows [first, first + kMassRows) of the call: their query vectors, positions and the
// log-denominators their probabilities are normalised by (lse_reference, else the call's own).
__device__ void load_mass_rows(const HeadAttention& a, int64_t first, const float* call_lse, MassTiles& s) {
  const int64_t rows = a.m * a.group, d = a.head_dim;
  for (int64_t i = threadIdx.x; i < kMassRows * d; i += kMassThreads) {
    const int64_t r = first + i / d, k = i % d;
    s.queries[i / d][k] = r < rows ? a.scale * a.q[(r / a.group) * a.q_stride + (r % a.group) * d + k] : 0.0f;
  }
  if (threadIdx.x < kMassRows) {
    const int64_t r = first + threadIdx.x;
    const bool valid = r < rows;
    s.row_positions[threadIdx.x] = valid ? a.q_positions[r / a.group] : 0;
    s.row_lse[threadIdx.x] = !valid ? -INFINITY : a.lse_reference ? a.lse_reference[r] : call_lse[r];
  }
}

// Grid (call, token tile, row tile): mass[t] += (sum over the tile's rows of p_rt) / group, p_rt =
// exp(score - row lse) for the tokens the row sees (mass_max: mass[t] = max(mass[t], max_r p_rt)).
// Launched after the out / lse kernels.
__global__ void __launch_bounds__(kMassThreads)
    mass_kernel(const HeadAttention* calls, AttentionBatchShape shape, const float* lse_scratch) {
  const HeadAttention a = calls[blockIdx.x];
  const int64_t first_token = blockIdx.y * static_cast<int64_t>(kMassTokens);
  const int64_t first_row = blockIdx.z * static_cast<int64_t>(kMassRows);
  if (!a.track_mass || !fits(a, shape) || first_row >= a.m * a.group) return;
  __shared__ MassTiles s;
  if (threadIdx.x == 0) find_mass_tokens(a, first_token, s);
  load_mass_rows(a, first_row, lse_scratch + blockIdx.x * shape.max_m * shape.max_group, s);
  __syncthreads();
  const int count = s.token_count, d = static_cast<int>(a.head_dim);
  if (count == 0) return;  // past the call's tokens
  for (int i = threadIdx.x; i < count * d; i += kMassThreads)
    s.keys[i / d][i % d] = s.token_keys[i / d][i % d];
  __syncthreads();
  const int token = threadIdx.x % kMassTokens, lane = threadIdx.x / kMassTokens;
  float mass = 0.0f;  // the sum of the lane's probabilities, or their maximum (mass_max)
  for (int r = lane; r < kMassRows && token < count; r += kRowLanes) {
    if (s.row_lse[r] == -INFINITY || s.token_positions[token] > s.row_positions[r]) continue;
    float dot = 0.0f;
    for (int k = 0; k < d; ++k) dot += s.queries[r][k] * s.keys[token][k];
    const float p = expf(dot - s.row_lse[r]);
    mass = a.mass_max ? fmaxf(mass, p) : mass + p;
  }
  s.partial[lane][token] = mass;
  __syncthreads();
  if (threadIdx.x >= count) return;
  float total = 0.0f;
  for (int l = 0; l < kRowLanes; ++l)
    total = a.mass_max ? fmaxf(total, s.partial[l][threadIdx.x]) : total + s.partial[l][threadIdx.x];
  if (a.mass_max) {
    // non-negative floats order as their bit patterns do
    atomicMax(reinterpret_cast<int*>(s.token_mass[threadIdx.x]), __float_as_int(total));
  } else {
    atomicAdd(s.token_mass[threadIdx.x], total / static_cast<float>(a.group));
  }
}

// ---- host ----

// Device scratch from the stream's memory pool, freed in stream order after the kernels.
class StreamScratch {
 public:
  StreamScratch(int64_t floats, cudaStream_t stream) : stream_(stream) {
    if (floats > 0)
      KVSHRINK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&data_), floats * sizeof(float), stream));
  }
  ~StreamScratch() {
    if (data_) cudaFreeAsync(data_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
  cudaStream_t stream_;
};

void check_shape(const AttentionBatchShape& shape, int64_t n_calls) {
  const auto refuse = [](const std::string& why) { throw std::invalid_argument("cuda attention: " + why); };
  if (n_calls < 0 || n_calls > INT_MAX) refuse(std::to_string(n_calls) + " calls");
  if (n_calls == 0) return;  // no work, whatever the shape
  if (shape.max_head_dim < 1 || shape.max_head_dim > kAttentionMaxHeadDim)
    refuse("head_dim " + std::to_string(shape.max_head_dim) + " (1.." + std::to_string(kAttentionMaxHeadDim) +
           " taken)");
  if (shape.max_group < 1 || shape.max_m < 0 || shape.max_tokens < 0)
    refuse("a negative or empty batch shape");
  if (shape.max_group > kMaxGridYZ || ceil_div(shape.max_m, kTileQueries) > kMaxGridYZ)
    refuse("group or query count beyond one launch");
  if (shape.track_mass && (ceil_div(shape.max_tokens, kMassTokens) > kMaxGridYZ ||
                           ceil_div(shape.max_m * shape.max_group, kMassRows) > kMaxGridYZ))
    refuse("token or query count beyond one mass launch");
}

// Chunks per decode call: enough thread blocks to fill the device, chunks of about kMinChunk
// tokens or more, at most kMaxSplits.
int64_t decode_splits(const AttentionBatchShape& shape, int64_t n_calls) {
  const int64_t wanted = ceil_div(kDecodeTargetBlocks, n_calls * shape.max_group);
  return std::clamp(std::min(wanted, ceil_div(shape.max_tokens, kMinChunk)), int64_t{1}, kMaxSplits);
}

}  // namespace

void attention(const HeadAttention* calls, int64_t n_calls, const AttentionBatchShape& shape,
               cudaStream_t stream) {
  check_shape(shape, n_calls);
  if (n_calls == 0 || shape.max_m == 0) return;
  const int64_t splits = decode_splits(shape, n_calls);
  const int64_t chunk = std::max(int64_t{1}, ceil_div(shape.max_tokens, splits));
  const int64_t partials = n_calls * splits * shape.max_group;
  const int64_t lse_floats = shape.track_mass ? n_calls * shape.max_m * shape.max_group : 0;
  // scratch: partial stats [partials x 2], partial sums [partials x max_head_dim], the mass pass's
  // log-denominators [n_calls x max_m x max_group]
  StreamScratch scratch(partials * (2 + shape.max_head_dim) + lse_floats, stream);
  float* stats = scratch.data();
  float* sums = stats + 2 * partials;
  float* lse_scratch = shape.track_mass ? sums + partials * shape.max_head_dim : nullptr;
  const auto n = static_cast<unsigned>(n_calls), group = static_cast<unsigned>(shape.max_group);
  if (shape.max_m > 1) {
    const dim3 grid(n, static_cast<unsigned>(ceil_div(shape.max_m, kTileQueries)), group);
    prefill_kernel<<<grid, kPrefillThreads, 0, stream>>>(calls, shape, lse_scratch);
    KVSHRINK_CUDA_CHECK(cudaGetLastError());
  }
  decode_split_kernel<<<dim3(n, static_cast<unsigned>(splits), group), kDecodeThreads, 0, stream>>>(
      calls, shape, chunk, stats, sums);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
  decode_combine_kernel<<<dim3(n, group), kMaxDim, 0, stream>>>(calls, shape, splits, stats, sums,
                                                                lse_scratch);
  KVSHRINK_CUDA_CHECK(cudaGetLastError());
  if (shape.track_mass && shape.max_tokens > 0) {
    const dim3 grid(n, static_cast<unsigned>(ceil_div(shape.max_tokens, kMassTokens)),
                    static_cast<unsigned>(ceil_div(shape.max_m * shape.max_group, kMassRows)));
    mass_kernel<<<grid, kMassThreads, 0, stream>>>(calls, shape, lse_scratch);
    KVSHRINK_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace kvshrink::kernels::cuda
