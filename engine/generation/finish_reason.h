// Why a sequence stopped generating: shared by the one-sequence Generator and the engine.
#pragma once

namespace kvshrink::engine {

enum class FinishReason { kEndOfGeneration, kMaxTokens, kStopString, kContextFull, kStoppedByCaller, kError };
const char* finish_reason_name(FinishReason reason);

}  // namespace kvshrink::engine
