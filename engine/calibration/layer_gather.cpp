#include "engine/calibration/layer_gather.h"

#include <algorithm>

#include "comm/communicator.h"
#include "engine/model/tensor_parallel_split.h"

namespace kvshrink::engine {

LayerGather::LayerGather(const LlamaConfig& config, int tp_size, int64_t owned)
    : d_(config.head_dim), owned_(owned), joint_(config.n_head_kv * config.head_dim) {
  for (int r = 0; r < tp_size; ++r) {
    const auto heads = split_range(config.n_head_kv, tp_size, r);
    first_.push_back(heads.begin);
    heads_.push_back(heads.size());
  }
}

void LayerGather::pack_head(int64_t h, const HeadSamples& samples, SampleKind key_kind) {
  n_ = samples.n;
  const int64_t width = owned_ * d_;
  send_.resize(static_cast<size_t>(2 * n_ * width));
  for (int64_t t = 0; t < n_; ++t) {
    std::copy_n(samples.rows[key_kind].begin() + t * d_, d_, send_.begin() + t * width + h * d_);
    std::copy_n(samples.rows[kValueRows].begin() + t * d_, d_, send_.begin() + (n_ + t) * width + h * d_);
  }
}

void LayerGather::gather(comm::Communicator& comm) {
  counts_.clear();
  for (const int64_t heads : heads_) counts_.push_back(2 * n_ * heads * d_);
  recv_.resize(static_cast<size_t>(2 * n_ * joint_));
  comm.all_gather(send_, recv_, counts_);
  keys_.resize(static_cast<size_t>(n_ * joint_));
  values_.resize(static_cast<size_t>(n_ * joint_));
  int64_t piece = 0;  // start of rank r's piece in recv_
  for (size_t r = 0; r < heads_.size(); ++r) {
    const int64_t width = heads_[r] * d_;
    for (int64_t t = 0; t < n_; ++t) {
      std::copy_n(recv_.begin() + piece + t * width, width, keys_.begin() + t * joint_ + first_[r] * d_);
      std::copy_n(recv_.begin() + piece + (n_ + t) * width, width,
                  values_.begin() + t * joint_ + first_[r] * d_);
    }
    piece += 2 * n_ * width;
  }
}

}  // namespace kvshrink::engine
