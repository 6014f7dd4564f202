// The compression methods by name: each is a press (scorer) and an allocator with its paper's
// defaults (kv-methods.md):
//   snapkv        SnapKV + uniform           w 32, maxpool 7
//   pyramidkv     SnapKV + pyramid           w 32, maxpool 7, beta 20
//   adakv         SnapKV + AdaKV             w 32, maxpool 7, alpha 0.2   (Ada-SnapKV)
//   headkv        SnapKV + HeadKV            w 32, maxpool 7, beta 1.01, needs a head profile
//   dynamickv     SnapKV + DynamicKV         w 8, avgpool 7, r_max 10
//   h2o           H2O + uniform              recent window 32
//   streamingllm  StreamingLLM + uniform     4 sinks
//   knorm         KNorm + uniform
//   tova          TOVA + uniform (shared across the heads of a layer)
// and the dimension-level methods (engine/compression/dimension_method.h), which need a calibrated
// basis (kvshrink calibrate):
//   mixeddimkv    SnapKV scores -> one knapsack over (head, token, rank), rank 0 = evict; no allocator
//   mixeddimkv-h  the same with heads weighted by the HeadKV profile
//   dynakv        every token kept, its rank from the calibrated importance predictor; no press
//   snapkv+dynakv SnapKV + uniform evict to budget / rate tokens, then DynaKV ranks the kept ones
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/allocator.h"
#include "kvstore/press.h"
#include "kvstore/press_params.h"

namespace kvshrink::kvstore {

struct CompressionMethod {
  std::unique_ptr<Press> press;
  std::unique_ptr<Allocator> allocator;
};

const std::vector<std::string>& method_names();
// Whether the method keeps tokens at reduced rank (needs a kv basis).
bool is_dimension_method(std::string_view method);
const std::vector<std::string>& allocator_names();
bool is_method(std::string_view name);
// Throws std::invalid_argument naming the known ones for an unknown method or allocator
// (allocator "" = the method's own).
void check_names(std::string_view method, std::string_view allocator);
// The method's own defaults (throws std::invalid_argument for an unknown name).
PressParams default_params(std::string_view method);
// Decode steps between re-compactions the method runs with by default: 1 for h2o and
// streamingllm (they evict as they go), else 0 (after prefill only).
int64_t default_compress_every(std::string_view method);
// The method's default allocator name ("uniform", "pyramid", ...).
std::string default_allocator(std::string_view method);
// allocator: "" = the method's own. press and allocator are null where the method has none
// (dynakv: neither; mixeddimkv(-h): no allocator). head_importance is used by the headkv allocator only
// ([n_layers * n_kv_heads]). Throws std::invalid_argument for unknown names.
CompressionMethod make_method(std::string_view method, const PressParams& params, std::string_view allocator,
                              std::vector<double> head_importance = {});

}  // namespace kvshrink::kvstore
