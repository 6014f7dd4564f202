// Output paths checked before any model work, so that a run never computes for minutes and then
// finds it cannot write its result.
#pragma once

#include <filesystem>

namespace kvshrink::comm {
class Communicator;
}

namespace kvshrink::launch {

// Throws std::runtime_error naming path when a file cannot be written there: its folder is missing
// or not writable, or path is a folder or a file that is not writable. Creates nothing.
void check_output_file(const std::filesystem::path& path);

// Collective: rank 0 (the rank that writes) checks path; a failure is a comm::JobError on every rank.
void check_output_file(const std::filesystem::path& path, comm::Communicator& comm);

}  // namespace kvshrink::launch
