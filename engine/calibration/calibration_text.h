// Calibration and held-out text for `kvshrink calibrate` as token chunks (docs/calibration.md):
// each text file is tokenized whole (no special tokens), cut into prefills of at most `chunk`
// tokens, and the pieces are taken from each text in turn.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::engine {

// Text that Debian ships (package base-files), so nothing is fetched: the calibration takes chunks
// from kDefaultCalibrationTexts in turn; the held-out text is another license.
inline constexpr const char* kLicenseFolder = "/usr/share/common-licenses";
inline constexpr std::array<const char*, 7> kDefaultCalibrationTexts = {
    "GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "Artistic", "BSD", "CC0-1.0"};
inline constexpr std::array<const char*, 1> kDefaultEvalTexts = {"GFDL-1.3"};
// A text's last piece shorter than min(chunk, kMinChunk) tokens is dropped (too few tokens to be
// worth a prefill); the smallest --chunk.
inline constexpr int64_t kMinChunk = 32;

// The paths kLicenseFolder/name of those `names` that exist, in order.
std::vector<std::string> default_texts(std::span<const char* const> names);

// Token chunks, flattened for broadcasting: chunk i is tokens[begin_i, begin_i + lengths[i]), with
// begin_i the sum of the lengths before it.
struct TokenChunks {
  std::vector<TokenId> tokens;
  std::vector<int64_t> lengths;

  int64_t total() const { return static_cast<int64_t>(tokens.size()); }
};

// Each text's tokens `texts[i]` split into pieces of at most `chunk` (a last piece under
// min(chunk, kMinChunk) dropped), then taken in turn from each text until `max_tokens` (the last
// piece cut to fit, and dropped when that leaves under min(chunk, kMinChunk)), so a small budget
// still sees every text.
TokenChunks interleave_chunks(std::span<const std::vector<TokenId>> texts, int64_t chunk, int64_t max_tokens);

// interleave_chunks of the files at `paths`, each read whole and encoded without special tokens.
// Throws std::runtime_error naming a file that cannot be read.
TokenChunks read_token_chunks(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                              int64_t chunk, int64_t max_tokens);

// Collective: rank `root`'s chunks arrive on every rank.
void broadcast_token_chunks(TokenChunks& chunks, comm::Communicator& comm, int root);

}  // namespace kvshrink::engine
