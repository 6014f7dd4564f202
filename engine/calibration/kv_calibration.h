// What `kvshrink calibrate` computes (docs/calibration.md): per (layer, kv head) energy-ordered
// bases of post-RoPE keys, pre-RoPE keys and values (uncentered PCA), per layer joint bases of all
// kv heads' keys and values concatenated, and per (layer, kv head) the importance predictor, all
// fitted on calibration chunks; then their held-out reconstruction errors and correlation.
//
// Tensor parallel: each rank prefills the same chunks and fits the bases and importance weights of
// its own kv heads; the rows of every layer's kv heads are all-gathered per chunk and the joint
// bases of layer l fitted by rank l % ranks (chunk_sampler.h); the whole model's arrays are summed
// over the ranks (zeros where another rank owns a head or layer), so every rank ends with all of it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/calibration/calibration_report.h"
#include "engine/calibration/calibration_text.h"
#include "engine/compression/kv_basis_file.h"
#include "engine/model/llama_model.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

struct KvCalibrationInput {
  KeySpace key_space = KeySpace::kPostRope;  // of the key bases written (both are measured)
  TokenChunks calibration;                   // the same on every rank (broadcast_token_chunks)
  // Calibration chunk i is prefilled at positions from calib_offsets[i % size] (RoPE is relative,
  // so only post-RoPE keys change); not empty; offset + chunk length within the context.
  std::vector<int64_t> calib_offsets;
  TokenChunks held_out;     // the same on every rank; empty = no held-out measurement
  int64_t eval_offset = 0;  // > 0: a second held-out pass at positions from eval_offset
};

// Called on every rank (print on the coordinator).
struct KvCalibrationProgress {
  std::function<void(size_t chunk, size_t chunks, int64_t tokens)> calibration_chunk;  // chunk done (0-based)
  std::function<void(int64_t offset)> held_out_pass;  // the held-out pass at `offset` done
};

struct KvCalibration {
  // The whole model's bases, energies, importance weights and joint bases, shape, key space,
  // tokens and offsets; the caller sets model, chunk and text.
  KvBasis basis;
  CalibrationReport report;  // no offsets without held-out text
};

// --calib-offsets by default: a post-RoPE basis must see the positions it will serve, so chunks
// spread over the context (0, chunk, 2 chunk, ... while offset + chunk <= context); pre-RoPE keys
// and values do not depend on the position: {0}.
std::vector<int64_t> default_calibration_offsets(KeySpace key_space, int64_t chunk, int64_t context);

// Collective. Throws std::runtime_error when LAPACK fails or a head got no calibration sample.
KvCalibration calibrate_kv_basis(LlamaModel& model, comm::Communicator& comm, const KvCalibrationInput& input,
                                 const KvCalibrationProgress& progress);

}  // namespace kvshrink::engine
