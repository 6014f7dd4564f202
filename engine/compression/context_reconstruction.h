// KVzip's scoring pass (kvstore/kvzip_press.h): the attention each cached token receives while the
// model reproduces the context. On a copy of the store in a pool of its own (it never takes the
// shared pool's blocks) with attention-mass tracking at zero, the model prefills `instruction`
// (kRepeatInstruction below) and then the context's own tokens
// (kv.token_ids(), teacher-forced); each original token's accumulated mass is its score. The copy
// is dropped afterwards; `kv` is unchanged. A token's score is the largest probability any
// reconstruction query and any of the group's query heads gives it (KVzip's max; the sum, H2O's
// accumulation, scored 0 % on niah_single_1 at 25 % where the max scored 100 %).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/model/llama_model.h"
#include "kvstore/kv_store.h"

namespace kvshrink::engine {

// The instruction KVzip prefills before the context's copy.
inline constexpr const char* kRepeatInstruction = "\n\nRepeat the previous context exactly.\n";

// Collective (every rank, its own heads): [layer * owned_kv_heads + local head][token] for the
// full-dimension tokens of kv, in their order. Throws std::logic_error when kv keeps no token ids.
std::vector<std::vector<float>> reconstruction_attention(LlamaModel& model, const kvstore::KvStore& kv,
                                                         std::span<const TokenId> instruction);

}  // namespace kvshrink::engine
