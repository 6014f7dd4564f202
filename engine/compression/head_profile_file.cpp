#include "engine/compression/head_profile_file.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"

namespace kvshrink::engine {

namespace {
constexpr const char* kType = "kvshrink.head_profile";
constexpr const char* kTensor = "head_importance";
}  // namespace

std::string model_identity(const GgufFile& file, const LlamaConfig& config) {
  return fmt::format("{} | layers {} heads {}/{} dim {} ffn {} vocab {}",
                     file.find_string("general.name").value_or("unnamed"), config.n_layers, config.n_head,
                     config.n_head_kv, config.n_embd, config.n_ff, config.vocab_size);
}

std::filesystem::path side_file_path(const std::filesystem::path& model, const std::string& suffix) {
  auto path = model;
  if (path.extension() == ".gguf") path.replace_extension();
  path += suffix;
  return path;
}

std::filesystem::path default_head_profile_path(const std::filesystem::path& model) {
  return side_file_path(model, ".heads.gguf");
}

void write_head_profile(const std::filesystem::path& path, const HeadProfile& profile) {
  GgufWriter writer;
  writer.set_string("general.type", kType);
  writer.set_string("kvshrink.head_profile.model", profile.model);
  writer.set_string("kvshrink.head_profile.method", profile.method);
  writer.set_uint32("kvshrink.head_profile.probes", static_cast<uint32_t>(profile.probes));
  std::vector<float> data(profile.importance.begin(), profile.importance.end());
  writer.add_f32_tensor(
      kTensor, {static_cast<uint64_t>(profile.n_kv_heads), static_cast<uint64_t>(profile.n_layers)}, data);
  writer.write(path);
}

HeadProfile read_head_profile(const std::filesystem::path& path) {
  const auto file = GgufFile::open(path);
  auto fail = [&](const std::string& what) {
    return std::runtime_error(fmt::format("head profile '{}': {}", path.string(), what));
  };
  if (file.find_string("general.type").value_or("") != kType) {
    throw fail(
        "not a head profile (general.type is not kvshrink.head_profile); make one with "
        "`kvshrink profile-heads`");
  }
  HeadProfile profile;
  profile.model = file.get_string("kvshrink.head_profile.model");
  profile.method = file.find_string("kvshrink.head_profile.method").value_or("");
  profile.probes = static_cast<int64_t>(file.find_uint("kvshrink.head_profile.probes").value_or(0));
  const auto* tensor = file.find_tensor(kTensor);
  if (!tensor || tensor->type != kernels::TensorType::F32 || tensor->dims.size() != 2) {
    throw fail("no F32 2-D tensor 'head_importance'");
  }
  profile.n_kv_heads = static_cast<int64_t>(tensor->dims[0]);
  profile.n_layers = static_cast<int64_t>(tensor->dims[1]);
  const auto bytes = file.tensor_data(*tensor);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  for (float v : values) {
    if (!std::isfinite(v) || v < 0) throw fail("a head importance is negative or not finite");
  }
  profile.importance.assign(values.begin(), values.end());
  return profile;
}

void check_profile_fits(const HeadProfile& profile, const std::string& identity, const LlamaConfig& config,
                        const std::filesystem::path& path) {
  if (profile.n_layers != config.n_layers || profile.n_kv_heads != config.n_head_kv ||
      profile.model != identity) {
    throw std::runtime_error(fmt::format(
        "head profile '{}' was made for another model ({}; {} layers x {} kv heads), this one is {}",
        path.string(), profile.model, profile.n_layers, profile.n_kv_heads, identity));
  }
}

}  // namespace kvshrink::engine
