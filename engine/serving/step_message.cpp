#include "engine/serving/step_message.h"

#include <nlohmann/json.hpp>

#include "comm/communicator.h"

namespace kvshrink::engine {
namespace {

using nlohmann::json;

json to_json(const CompressionSpec& spec) {
  const auto& p = spec.params;
  return {{"method", spec.method},
          {"allocator", spec.allocator},
          {"fraction", spec.budget_fraction},
          {"tokens", spec.budget_tokens},
          {"every", spec.compress_every},
          {"window", p.window},
          {"pool_kernel", p.pool_kernel},
          {"pool_max", p.pool_type == kvstore::PoolType::kMax},
          {"sinks", p.sinks},
          {"alpha", p.alpha},
          {"pyramid_beta", p.pyramid_beta},
          {"head_beta", p.head_beta},
          {"r_max", p.r_max},
          {"head_profile", p.head_profile},
          {"ranks", p.ranks},
          {"dyna_rate", p.dyna_rate},
          {"kv_basis", p.kv_basis},
          {"joint_basis", p.joint_basis},
          {"chunk_size", p.chunk_size}};
}

CompressionSpec spec_from_json(const json& j) {
  CompressionSpec spec;
  spec.method = j.at("method").get<std::string>();
  spec.allocator = j.at("allocator").get<std::string>();
  spec.budget_fraction = j.at("fraction").get<double>();
  spec.budget_tokens = j.at("tokens").get<int64_t>();
  spec.compress_every = j.at("every").get<int64_t>();
  auto& p = spec.params;
  p.window = j.at("window").get<int64_t>();
  p.pool_kernel = j.at("pool_kernel").get<int64_t>();
  p.pool_type = j.at("pool_max").get<bool>() ? kvstore::PoolType::kMax : kvstore::PoolType::kAverage;
  p.sinks = j.at("sinks").get<int64_t>();
  p.alpha = j.at("alpha").get<double>();
  p.pyramid_beta = j.at("pyramid_beta").get<double>();
  p.head_beta = j.at("head_beta").get<double>();
  p.r_max = j.at("r_max").get<double>();
  p.head_profile = j.at("head_profile").get<std::string>();
  p.ranks = j.at("ranks").get<std::vector<int32_t>>();
  p.dyna_rate = j.at("dyna_rate").get<double>();
  p.kv_basis = j.at("kv_basis").get<std::string>();
  p.joint_basis = j.at("joint_basis").get<bool>();
  p.chunk_size = j.at("chunk_size").get<int64_t>();
  return spec;
}

json to_json(const StepMessage& m) {
  json added = json::array(), forks = json::array(), rows = json::array(), compress = json::array();
  for (const auto& a : m.added) {
    json fork_specs = json::array();
    for (const auto& spec : a.forks) fork_specs.push_back(to_json(spec));
    added.push_back({{"id", a.id}, {"spec", to_json(a.compression)}, {"forks", fork_specs}});
  }
  for (const auto& f : m.forks) {
    forks.push_back({{"id", f.id}, {"parent", f.parent}, {"index", f.index}, {"budget", f.budget_tokens}});
  }
  for (const auto& r : m.rows) rows.push_back({{"id", r.id}, {"tokens", r.tokens}, {"logits", r.logits}});
  for (const auto& c : m.compress) compress.push_back({{"id", c.id}, {"budget", c.budget_tokens}});
  return {{"end", m.end_of_run},
          {"released", m.released},
          {"added", added},
          {"forks", forks},
          {"rows", rows},
          {"compress", compress},
          {"prompt_ended", m.prompt_ended}};
}

StepMessage from_json(const json& j) {
  StepMessage m;
  m.end_of_run = j.at("end").get<bool>();
  m.released = j.at("released").get<std::vector<int64_t>>();
  for (const auto& a : j.at("added")) {
    std::vector<CompressionSpec> fork_specs;
    for (const auto& spec : a.at("forks")) fork_specs.push_back(spec_from_json(spec));
    m.added.push_back({a.at("id").get<int64_t>(), spec_from_json(a.at("spec")), std::move(fork_specs)});
  }
  for (const auto& f : j.at("forks")) {
    m.forks.push_back({f.at("id").get<int64_t>(), f.at("parent").get<int64_t>(), f.at("index").get<int64_t>(),
                       f.at("budget").get<int64_t>()});
  }
  for (const auto& r : j.at("rows")) {
    m.rows.push_back(
        {r.at("id").get<int64_t>(), r.at("tokens").get<std::vector<TokenId>>(), r.at("logits").get<bool>()});
  }
  for (const auto& c : j.at("compress"))
    m.compress.push_back({c.at("id").get<int64_t>(), c.at("budget").get<int64_t>()});
  m.prompt_ended = j.at("prompt_ended").get<std::vector<int64_t>>();
  return m;
}

}  // namespace

std::string compression_key(const CompressionSpec& spec) {
  return to_json(spec).dump();
}

void broadcast_step(comm::Communicator& control, StepMessage& message) {
  std::vector<uint8_t> bytes;
  if (control.world().is_coordinator()) bytes = json::to_msgpack(to_json(message));
  control.broadcast_vector(bytes, 0);
  if (!control.world().is_coordinator()) message = from_json(json::from_msgpack(bytes));
}

}  // namespace kvshrink::engine
