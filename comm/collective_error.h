// Agreeing on errors in SPMD code. When a check can fail on some ranks only (rank 0 tokenized and
// saw the prompt is too long, one rank could not open its shard), every rank must learn it, or
// the others hang in their next collective. The caller writes
//
//   comm::check_all(comm, prompt.size() <= max_tokens, "prompt is longer than the context");
//
// on every rank; if the check failed anywhere, every rank throws the same JobError. Printing is
// the catcher's job, on rank 0 only, so the job reports the error once.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "comm/communicator.h"

namespace kvshrink::comm {

// Thrown on every rank; what() is the message of the lowest failing rank.
class JobError : public std::runtime_error {
 public:
  JobError(const std::string& message, int failing_rank)
      : std::runtime_error(message), failing_rank_(failing_rank) {}

  int failing_rank() const { return failing_rank_; }

 private:
  int failing_rank_;
};

// Collective. One all_reduce_max when every rank is ok; on failure one more broadcast of the
// lowest failing rank's message, then JobError on every rank.
void check_all(Communicator& comm, bool ok, std::string_view message_if_not_ok);

}  // namespace kvshrink::comm
