// `kvshrink calibrate`: fits per-(layer, kv head) energy-ordered key and value bases, per-layer
// joint bases and the importance predictor on calibration text, writes them as a kv basis file
// (engine/compression/kv_basis_file.h) and reports their held-out reconstruction errors and
// correlation (engine/calibration/kv_calibration.h; docs/calibration.md). This file holds the
// flags, the checks of the options and the printing.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend_factory.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

struct CalibrateOptions {
  std::string model;
  std::vector<std::string> text;       // "" = the default license texts (engine::kDefaultCalibrationTexts)
  std::vector<std::string> eval_text;  // held-out text; "" = engine::kDefaultEvalTexts
  int64_t max_tokens = 8192;
  int64_t chunk = 1024;
  // Calibration chunk i is placed at positions from calib_offsets[i % size] (RoPE is relative, so
  // only post-RoPE keys change): lets a post-RoPE basis see the positions it will serve.
  // Empty: engine::default_calibration_offsets.
  std::vector<int64_t> calib_offsets;
  int64_t eval_tokens = 2048;  // 0 = no measurement
  int64_t eval_offset = 4096;  // a second measurement with the held-out text at positions offset+
  std::string key_space = "post-rope";
  std::string out;  // "" = engine::default_kv_basis_path(model)
  bool per_layer = false;
  int64_t context_size = 0;
  int64_t batch_size = 512;
  kernels::BackendOptions backend;  // --matmul-activations, --device
};

CLI::App* add_calibrate_command(CLI::App& app, CalibrateOptions& options);
int run_calibrate(const CalibrateOptions& options, comm::Communicator& comm, comm::Communicator& data);

}  // namespace kvshrink::launch
