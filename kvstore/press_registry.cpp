#include "kvstore/press_registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <stdexcept>

#include "kvstore/adakv_allocator.h"
#include "kvstore/dynamickv_allocator.h"
#include "kvstore/expected_attention_press.h"
#include "kvstore/h2o_press.h"
#include "kvstore/headkv_allocator.h"
#include "kvstore/knorm_press.h"
#include "kvstore/kvzip_press.h"
#include "kvstore/pyramid_allocator.h"
#include "kvstore/snapkv_press.h"
#include "kvstore/streaming_llm_press.h"
#include "kvstore/tova_press.h"
#include "kvstore/uniform_allocator.h"

namespace kvshrink::kvstore {

const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names = {
      "snapkv", "pyramidkv", "adakv",      "headkv",       "dynamickv", "h2o",           "streamingllm",
      "knorm",  "tova",      "mixeddimkv", "mixeddimkv-h", "dynakv",    "snapkv+dynakv", "expected-attention",
      "kvzip"};
  return names;
}

bool is_dimension_method(std::string_view method) {
  return method == "mixeddimkv" || method == "mixeddimkv-h" || method == "dynakv" ||
         method == "snapkv+dynakv";
}

const std::vector<std::string>& allocator_names() {
  static const std::vector<std::string> names = {"uniform", "pyramid", "adakv", "headkv", "dynamickv"};
  return names;
}

bool is_method(std::string_view name) {
  const auto& names = method_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

namespace {
void check_method(std::string_view method) {
  if (!is_method(method)) {
    throw std::invalid_argument(
        fmt::format("unknown press '{}' (known: {})", method, fmt::join(method_names(), ", ")));
  }
}
}  // namespace

void check_names(std::string_view method, std::string_view allocator) {
  check_method(method);
  const auto& names = allocator_names();
  if (!allocator.empty() && (method == "mixeddimkv" || method == "mixeddimkv-h" || method == "dynakv")) {
    throw std::invalid_argument(fmt::format(
        "--allocator does not apply to {}: it {}", method,
        method == "dynakv" ? "keeps every token" : "chooses evictions and ranks in one knapsack"));
  }
  if (!allocator.empty() && std::find(names.begin(), names.end(), allocator) == names.end()) {
    throw std::invalid_argument(
        fmt::format("unknown allocator '{}' (known: {})", allocator, fmt::join(names, ", ")));
  }
}

PressParams default_params(std::string_view method) {
  check_method(method);
  PressParams params;
  if (method == "dynamickv") {
    params.window = 8;
    params.pool_type = PoolType::kAverage;
  }
  return params;
}

int64_t default_compress_every(std::string_view method) {
  return method == "h2o" || method == "streamingllm" ? 1 : 0;
}

std::string default_allocator(std::string_view method) {
  check_method(method);
  if (method == "mixeddimkv" || method == "mixeddimkv-h" || method == "dynakv") return "";
  if (method == "pyramidkv") return "pyramid";
  if (method == "adakv" || method == "headkv" || method == "dynamickv") return std::string(method);
  return "uniform";
}

CompressionMethod make_method(std::string_view method, const PressParams& params, std::string_view allocator,
                              std::vector<double> head_importance) {
  check_names(method, allocator);
  CompressionMethod out;
  if (method == "dynakv") return out;
  if (method == "h2o") {
    out.press = std::make_unique<H2oPress>(params);
  } else if (method == "streamingllm") {
    out.press = std::make_unique<StreamingLlmPress>(params);
  } else if (method == "knorm") {
    out.press = std::make_unique<KnormPress>();
  } else if (method == "tova") {
    out.press = std::make_unique<TovaPress>();
  } else if (method == "expected-attention") {
    out.press = std::make_unique<ExpectedAttentionPress>(params);
  } else if (method == "kvzip") {
    out.press = std::make_unique<KvzipPress>(params);
  } else {
    out.press = std::make_unique<SnapKvPress>(params);
  }
  const std::string name = allocator.empty() ? default_allocator(method) : std::string(allocator);
  if (name.empty()) return out;
  if (name == "uniform") {
    out.allocator = std::make_unique<UniformAllocator>();
  } else if (name == "pyramid") {
    out.allocator = std::make_unique<PyramidAllocator>(params.pyramid_beta);
  } else if (name == "adakv") {
    out.allocator = std::make_unique<AdaKvAllocator>(params.alpha);
  } else if (name == "headkv") {
    out.allocator = std::make_unique<HeadKvAllocator>(std::move(head_importance), params.head_beta);
  } else {
    out.allocator = std::make_unique<DynamicKvAllocator>(params.r_max);
  }
  return out;
}

}  // namespace kvshrink::kvstore
