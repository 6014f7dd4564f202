#include "launch/model_options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "comm/collective_error.h"
#include "kernels/backend_factory.h"
#include "kernels/devices.h"
#include "launch/cli_checks.h"

namespace kvshrink::launch {

void add_model_options(CLI::App& cmd, std::string& model, int64_t& context_size, int64_t& batch_size,
                       kernels::BackendOptions& backend) {
  cmd.add_option("-m,--model", model, "GGUF model file (llama architecture)")->required();
  cmd.add_option("-c,--ctx-size", context_size, "Context size in tokens (0 = the model's trained context)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd.add_option("-b,--batch-size", batch_size, "Prefill chunk size in tokens")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd.add_option_function<std::string>(
         "--matmul-activations",
         [&backend](const std::string& name) {
           backend.matmul_activations = kernels::matmul_activations_from_name(name);
         },
         "What packed-weight matmuls multiply: f32 activations (exact), or q8: each 32-element block "
         "quantized to 8 bits with a scale, in integer dot products (llama.cpp's CPU numerics)")
      ->default_str("f32")
      ->check(CLI::IsMember(kernels::matmul_activation_names()));
  cmd.add_option_function<std::string>(
         "--kv-dtype",
         [&backend](const std::string& name) { backend.kv_dtype = kernels::kv_dtype_from_name(name); },
         "Element type of the KV cache (K, V and low-rank coefficients): f16, or f32 at twice the bytes "
         "per token; attention accumulates in f32 either way. \"% of full KV\" counts 16-bit bytes; "
         "--budget counts tokens")
      ->default_str("f16")
      ->check(CLI::Validator(
          [](const std::string& name) -> std::string {
            try {
              kernels::kv_dtype_from_name(name);
              return "";
            } catch (const std::invalid_argument& e) {
              return e.what();
            }
          },
          "f16|f32"));
  backend.device = kernels::default_device();
  cmd.add_option("--device", backend.device,
                 "Compute device: cpu, or cuda (each rank on its node-local rank's GPU; the weights and "
                 "matmuls on the GPU, the KV cache and attention on the host for now). Default: cuda when "
                 "this build has it and a GPU is present")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](const std::string& name) -> std::string {
            const auto names = kernels::device_names();
            if (std::find(names.begin(), names.end(), name) != names.end()) return "";
            if (name == "cuda")
              return "this build has no CUDA backend (no nvcc at configure time, or -DKVSHRINK_CUDA=OFF)";
            return fmt::format("unknown device '{}' (this build has: {})", name, fmt::join(names, ", "));
          },
          "cpu|cuda"));
}

void add_sampling_options(CLI::App& cmd, engine::SamplingParams& s) {
  cmd.add_option("--temperature", s.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str()
      ->check(finite_in(0.0, 100.0));
  cmd.add_option("--top-k", s.top_k, "Keep the k most likely tokens; 0 = all")
      ->capture_default_str()
      ->check(non_negative_integer());
  cmd.add_option("--top-p", s.top_p, "Nucleus sampling: keep the smallest set with this probability")
      ->capture_default_str()
      ->check(positive_up_to(1.0));
  cmd.add_option("--seed", s.seed, "Random seed for sampling")
      ->capture_default_str()
      ->check(non_negative_integer());
}

void check_context_lengths(const std::vector<int64_t>& lengths, int64_t context, comm::Communicator& comm) {
  const auto longest = std::max_element(lengths.begin(), lengths.end());
  comm::check_all(comm, longest == lengths.end() || *longest <= context,
                  fmt::format("--context-lengths {} exceeds the context of {} tokens (the model's trained "
                              "context, or --ctx-size)",
                              longest == lengths.end() ? 0 : *longest, context));
}

}  // namespace kvshrink::launch
