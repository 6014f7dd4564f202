// Where the tests find the default model and the golden files: the environment variables
// KVSHRINK_MODEL and KVSHRINK_GOLDEN_DIR when set, else the paths CMake compiled in
// (models/smollm2-135m-instruct.gguf and tests/golden of this source tree).
#pragma once

#include <cstdlib>
#include <string>

namespace kvshrink::testing {

inline std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

inline std::string model_path() {
  return env_or("KVSHRINK_MODEL", KVSHRINK_TEST_MODEL_PATH);
}
inline std::string golden_path(const std::string& file_name) {
  return env_or("KVSHRINK_GOLDEN_DIR", KVSHRINK_TEST_GOLDEN_DIR) + "/" + file_name;
}

}  // namespace kvshrink::testing
