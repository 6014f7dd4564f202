#include "engine/generation/finish_reason.h"

namespace kvshrink::engine {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEndOfGeneration:
      return "end of generation";
    case FinishReason::kMaxTokens:
      return "max tokens";
    case FinishReason::kStopString:
      return "stop string";
    case FinishReason::kContextFull:
      return "context full";
    case FinishReason::kStoppedByCaller:
      return "stopped";
    case FinishReason::kError:
      return "error";
  }
  return "?";
}

}  // namespace kvshrink::engine
