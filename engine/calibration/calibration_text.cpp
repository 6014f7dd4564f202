#include "engine/calibration/calibration_text.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "comm/communicator.h"

namespace kvshrink::engine {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path)) {
    throw std::runtime_error(fmt::format("calibrate: cannot read text file '{}'", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::vector<std::string> default_texts(std::span<const char* const> names) {
  std::vector<std::string> paths;
  for (const char* name : names) {
    const auto path = std::filesystem::path(kLicenseFolder) / name;
    if (std::filesystem::is_regular_file(path)) paths.push_back(path.string());
  }
  return paths;
}

TokenChunks interleave_chunks(std::span<const std::vector<TokenId>> texts, int64_t chunk,
                              int64_t max_tokens) {
  const int64_t min_piece = std::min(chunk, kMinChunk);
  std::vector<std::vector<std::vector<TokenId>>> pieces;  // [text][piece]
  for (const auto& ids : texts) {
    auto& text = pieces.emplace_back();
    for (size_t begin = 0; begin < ids.size(); begin += static_cast<size_t>(chunk)) {
      const size_t end = std::min(ids.size(), begin + static_cast<size_t>(chunk));
      if (static_cast<int64_t>(end - begin) < min_piece) break;
      text.emplace_back(ids.begin() + static_cast<ptrdiff_t>(begin),
                        ids.begin() + static_cast<ptrdiff_t>(end));
    }
  }
  TokenChunks chunks;
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (const auto& text : pieces) {
      if (round >= text.size()) continue;
      const auto& piece = text[round];
      const auto take = std::min<int64_t>(static_cast<int64_t>(piece.size()), max_tokens - chunks.total());
      if (take < min_piece) return chunks;  // the budget is spent
      chunks.tokens.insert(chunks.tokens.end(), piece.begin(), piece.begin() + take);
      chunks.lengths.push_back(take);
      any = true;
    }
    if (!any) return chunks;  // every text is used up
  }
}

TokenChunks read_token_chunks(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                              int64_t chunk, int64_t max_tokens) {
  std::vector<std::vector<TokenId>> texts;
  for (const auto& path : paths) texts.push_back(tokenizer.encode(read_text(path), /*parse_special=*/false));
  return interleave_chunks(texts, chunk, max_tokens);
}

void broadcast_token_chunks(TokenChunks& chunks, comm::Communicator& comm, int root) {
  comm.broadcast_vector(chunks.tokens, root);
  comm.broadcast_vector(chunks.lengths, root);
}

}  // namespace kvshrink::engine
