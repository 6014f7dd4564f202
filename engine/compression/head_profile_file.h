// A head-importance profile (HeadKV's retrieval-reasoning scores) as a GGUF side file next to the
// model, written by `kvshrink profile-heads` and read by the headkv allocator.
//
// Keys: general.type = "kvshrink.head_profile", kvshrink.head_profile.model (the model's identity,
// model_identity()), .method, .probes; tensor "head_importance" F32 dims [n_kv_heads, n_layers]
// (innermost first), one score per (layer, kv head), >= 0.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/model/llama_config.h"

namespace kvshrink::engine {

class GgufFile;

struct HeadProfile {
  std::string model;   // model_identity() of the model it was made for
  std::string method;  // e.g. "headkv-r2 (niah)"
  int64_t probes = 0;
  int64_t n_layers = 0;
  int64_t n_kv_heads = 0;
  std::vector<double> importance;  // [n_layers * n_kv_heads]
};

// A string that names a model's shape and name: a profile only fits the model that made it.
std::string model_identity(const GgufFile& file, const LlamaConfig& config);
// `<model without .gguf><suffix>`: where side files of a model go (suffix e.g. ".heads.gguf").
std::filesystem::path side_file_path(const std::filesystem::path& model, const std::string& suffix);
// `<model without .gguf>.heads.gguf`
std::filesystem::path default_head_profile_path(const std::filesystem::path& model);

void write_head_profile(const std::filesystem::path& path, const HeadProfile& profile);
// Throws std::runtime_error naming the file when it is not a head profile or its shape is wrong.
HeadProfile read_head_profile(const std::filesystem::path& path);
// Throws std::runtime_error when the profile was made for another model.
void check_profile_fits(const HeadProfile& profile, const std::string& identity, const LlamaConfig& config,
                        const std::filesystem::path& path);

}  // namespace kvshrink::engine
