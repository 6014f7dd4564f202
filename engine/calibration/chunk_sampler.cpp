#include "engine/calibration/chunk_sampler.h"

namespace kvshrink::engine {

ChunkSampler::ChunkSampler(const LlamaModel& model, SampleKind key_kind, int tp_size, int rank)
    : backend_(model.backend()),
      rope_base_(model.config().rope_freq_base),
      key_kind_(key_kind),
      tp_size_(tp_size),
      rank_(rank),
      rows_(model.config(), tp_size, model.shard().kv_heads.size()) {}

void ChunkSampler::walk(const kvstore::KvStore& kv, comm::Communicator& comm, const HeadVisitor& on_head,
                        const JointVisitor& on_joint_layer) {
  for (int64_t layer = 0; layer < kv.n_layers(); ++layer) {
    for (int64_t h = 0; h < kv.owned_kv_heads(); ++h) {
      gather_head_samples(kv.head(layer, h), backend_, rope_base_, samples_);
      on_head(layer, h, samples_);
      rows_.pack_head(h, samples_, key_kind_);
    }
    rows_.gather(comm);
    if (owns_joint_layer(layer)) on_joint_layer(layer, rows_);
  }
}

}  // namespace kvshrink::engine
