// What serve and batch check every request body against (launch/openai/completion_request.h):
// the served model name, the engine's context, the default press and budget, and how a body's
// kv_press is made into a spec with the command line's press parameters.
#pragma once

#include <string>

#include "engine/serving/engine.h"
#include "launch/compression_options.h"
#include "launch/openai/completion_request.h"

namespace kvshrink::launch {

// served_model_name "" = the GGUF file's stem. The limits (max prompt tokens, max_tokens) are 0:
// the context.
ApiSettings api_settings(const engine::Engine& engine, const std::string& model_path,
                         const std::string& served_model_name, const CompressionOptions& compression,
                         const engine::CompressionSpec& default_spec);

}  // namespace kvshrink::launch
