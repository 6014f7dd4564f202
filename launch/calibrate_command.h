// `kvshrink calibrate`: prefills calibration text, gathers every (layer, kv head)'s keys and
// values, and writes energy-ordered orthonormal bases from their uncentered PCA
// (engine/compression/kv_basis_file.h, engine/compression/pca.h; issue 5 step 1). It then measures
// the mean relative reconstruction error ||x - P_r x||^2 / ||x||^2 on held-out text at
// r = d, d/2, d/4, d/8, d/16 for post-RoPE keys, pre-RoPE keys and values (docs/calibration.md).
// Two more parts of the file: per (layer, kv head) a ridge fit of a token's log attention
// importance on [pre-RoPE key, value, 1] (engine::predict_importance; the held-out correlation is
// reported), and per layer joint bases of the keys and of the values of all kv heads concatenated
// (held-out errors at R = D, D/2, D/4, D/8 beside the per-head ones).
//
// Tensor parallel: each rank prefills the same chunks and computes the bases and importance weights
// of its own kv heads; the rows of every layer's kv heads are all-gathered per chunk and the joint
// bases of layer l computed by rank l % ranks; all are summed into rank 0 (zeros elsewhere), which
// writes the file.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct CalibrateOptions {
  std::string model;
  std::vector<std::string> text;       // "" = the default license texts (kDefaultCalibrationTexts)
  std::vector<std::string> eval_text;  // held-out text; "" = kDefaultEvalTexts
  int64_t max_tokens = 8192;
  int64_t chunk = 1024;
  // Calibration chunk i is placed at positions from calib_offsets[i % size] (RoPE is relative, so
  // only post-RoPE keys change): lets a post-RoPE basis see the positions it will serve.
  // Empty: spread over the context for a post-RoPE basis, {0} for pre-RoPE.
  std::vector<int64_t> calib_offsets;
  int64_t eval_tokens = 2048;  // 0 = no measurement
  int64_t eval_offset = 4096;  // a second measurement with the held-out text at positions offset+
  std::string key_space = "post-rope";
  std::string out;  // "" = engine::default_kv_basis_path(model)
  bool per_layer = false;
  int64_t context_size = 0;
  int64_t batch_size = 512;
};

CLI::App* add_calibrate_command(CLI::App& app, CalibrateOptions& options);
int run_calibrate(const CalibrateOptions& options, comm::Communicator& comm);

}  // namespace kvshrink::launch
