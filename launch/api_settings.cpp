#include "launch/api_settings.h"

#include <filesystem>

namespace kvshrink::launch {

ApiSettings api_settings(const engine::Engine& engine, const std::string& model_path,
                         const std::string& served_model_name, const CompressionOptions& compression,
                         const engine::CompressionSpec& default_spec) {
  ApiSettings settings;
  settings.model_name =
      served_model_name.empty() ? std::filesystem::path(model_path).stem().string() : served_model_name;
  settings.context_size = engine.context_size();
  settings.compression = default_spec;
  settings.press_spec = [compression](const std::string& method) {
    return compression_spec_for(compression, method);
  };
  return settings;
}

}  // namespace kvshrink::launch
