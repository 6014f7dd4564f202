// `kvshrink batch` end to end on the real model: an OpenAI batch file with good and bad lines under
// mpirun -np 2 (one record per line, greedy text equal to `kvshrink generate`), resuming from a
// results file with a torn last line, and SIGTERM to rank 0 (exit 75, then a second run completes
// the job with nothing lost or repeated), directly at np 1 and under mpirun.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/run_process.h"
#include "support/test_paths.h"

extern char** environ;

namespace kvshrink {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::vector<json> read_records(const fs::path& path) {
  std::vector<json> records;
  std::istringstream in(read_text(path));
  for (std::string line; std::getline(in, line);) records.push_back(json::parse(line));
  return records;
}

// Records by custom_id (string ids only), failing the test on a custom_id seen twice.
std::map<std::string, json> by_custom_id(const std::vector<json>& records) {
  std::map<std::string, json> out;
  for (const auto& r : records) {
    if (!r["custom_id"].is_string()) continue;
    EXPECT_TRUE(out.emplace(r["custom_id"].get<std::string>(), r).second) << "two records: " << r.dump();
  }
  return out;
}

json line(const std::string& custom_id, const std::string& url, const json& body) {
  return {{"custom_id", custom_id}, {"method", "POST"}, {"url", url}, {"body", body}};
}

json completion_line(const std::string& custom_id, const std::string& prompt, int max_tokens,
                     bool ignore_eos = false) {
  return line(
      custom_id, "/v1/completions",
      {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", ignore_eos}});
}

// A process started in the background (sh -c "exec COMMAND > log 2>&1").
struct Background {
  pid_t pid = -1;
  // The exit code, or 124 when it does not end within `timeout` (it is killed then).
  int wait(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return 124;
      }
      std::this_thread::sleep_for(50ms);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

Background start(const std::string& command, const fs::path& log) {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("OMP_NUM_THREADS", "1", 1);
  setenv("OPENBLAS_NUM_THREADS", "1", 1);
  const std::string shell = "exec " + command + " > " + log.string() + " 2>&1";
  const char* argv[] = {"/bin/sh", "-c", shell.c_str(), nullptr};
  Background process;
  if (posix_spawn(&process.pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0)
    throw std::runtime_error("posix_spawn failed");
  return process;
}

// The pid of the kvshrink process of MPI rank 0 whose command line contains `marker` (-1: none yet).
pid_t rank0_pid(const std::string& marker) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = read_text(entry.path() / "cmdline");  // NUL-separated arguments
    if (cmdline.rfind(std::string(KVSHRINK_BINARY) + '\0', 0) != 0 ||
        cmdline.find(marker) == std::string::npos)
      continue;
    if (read_text(entry.path() / "environ").find(std::string("OMPI_COMM_WORLD_RANK=0") + '\0') !=
        std::string::npos)
      return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

class BatchCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kvshrink_batch_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_input(const std::vector<std::string>& lines) {
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    write_text(input(), text);
  }
  fs::path input() const { return dir_ / "requests.jsonl"; }
  fs::path output() const { return dir_ / "results.jsonl"; }

  // The command line of a batch run on np ranks (np 0: the binary alone, without mpirun).
  std::string batch_command(int np, const std::string& extra = "") const {
    const std::string binary = np == 0 ? std::string(KVSHRINK_BINARY) : testing::mpirun_kvshrink(np);
    return binary + " batch -m " + testing::model_path() + " -c 1024 --kv-memory 64MiB -i " +
           input().string() + " -o " + output().string() + " --progress-interval 1 " + extra;
  }
  testing::RunResult batch(int np, const std::string& extra = "") const {
    return testing::run_command(batch_command(np, extra), 180);
  }

  // Starts a batch of long generations one at a time, SIGTERMs rank 0 once the first record is
  // written, and expects exit 75 with some but not all records; then a second run completes it.
  void interrupt_and_resume(int np) {
    std::vector<std::string> lines;
    for (int i = 0; i < 6; ++i)
      lines.push_back(
          completion_line("long-" + std::to_string(i), "Count: " + std::to_string(i), 24, true).dump());
    write_input(lines);
    Background run = start(batch_command(np, "--max-num-seqs 1"), dir_ / "log.txt");
    pid_t rank0 = -1;
    for (auto deadline = std::chrono::steady_clock::now() + 120s;
         std::chrono::steady_clock::now() < deadline;) {
      if (rank0 < 0) rank0 = np == 0 ? run.pid : rank0_pid(output().string());  // np 0: sh exec'ed it
      if (rank0 > 0 && fs::exists(output()) && !read_text(output()).empty()) break;
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_GT(rank0, 0) << read_text(dir_ / "log.txt");
    ASSERT_EQ(kill(rank0, SIGTERM), 0);
    const int code = run.wait(120s);
    const std::string log = read_text(dir_ / "log.txt");
    ASSERT_EQ(code, 75) << log;
    EXPECT_NE(log.find("of 6 done; resume with the same command"), std::string::npos) << log;
    const auto first = read_records(output());
    EXPECT_GE(first.size(), 1u);
    EXPECT_LT(first.size(), 6u) << "the run ended before the signal: make the lines longer";
    by_custom_id(first);

    const auto second = batch(np, "--max-num-seqs 1");
    ASSERT_EQ(second.exit_code, 0) << second.output;
    const auto records = read_records(output());
    const auto ids = by_custom_id(records);
    EXPECT_EQ(records.size(), 6u);
    ASSERT_EQ(ids.size(), 6u);
    for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(records[i], first[i]) << "rewritten: " << i;
    for (const auto& [id, r] : ids) {
      EXPECT_EQ(r["response"]["status_code"], 200) << r.dump();
      EXPECT_EQ(r["response"]["body"]["usage"]["completion_tokens"], 24) << r.dump();
    }
  }

  fs::path dir_;
};

TEST_F(BatchCommandTest, EveryLineGetsOneRecordAndGreedyTextEqualsGenerate) {
  std::string long_prompt;
  for (int i = 0; i < 30; ++i)
    long_prompt += "The quick brown fox jumps over the lazy dog number " + std::to_string(i) + ". ";
  json chat = line("chat", "/v1/chat/completions",
                   {{"messages", {{{"role", "user"}, {"content", "Name a color."}}}},
                    {"max_tokens", 8},
                    {"temperature", 0},
                    {"stream", true}});
  json press = completion_line("press", long_prompt, 6);
  press["body"]["kv_press"] = "snapkv";
  press["body"]["kv_budget"] = 0.5;
  json bad_temperature = completion_line("bad-temperature", "Hello", 4);
  bad_temperature["body"]["temperature"] = 5;
  write_input({completion_line("plain", "The capital of France is", 8).dump(), chat.dump(), "{not json",
               line("bad-url", "/v1/embeddings", {{"input", "x"}}).dump(), "", press.dump(),
               bad_temperature.dump(), completion_line("plain", "A duplicate custom_id", 4).dump()});

  const auto result = batch(2);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("batch complete: all 7 lines have a record"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("kvshrink: batch 7/7 lines (100%)"), std::string::npos) << result.output;
  const auto records = read_records(output());
  ASSERT_EQ(records.size(), 7u);
  const auto ids = by_custom_id(records);
  ASSERT_EQ(ids.size(), 5u);
  for (const auto& r : records) {
    EXPECT_TRUE(r["id"].is_string()) << r.dump();
    EXPECT_TRUE(r["response"].is_object()) << r.dump();
  }

  const auto& plain = ids.at("plain");
  ASSERT_EQ(plain["response"]["status_code"], 200) << plain.dump();
  EXPECT_TRUE(plain["error"].is_null());
  EXPECT_EQ(plain["response"]["body"]["object"], "text_completion");
  EXPECT_EQ(plain["response"]["request_id"], plain["response"]["body"]["id"]);
  const auto text = plain["response"]["body"]["choices"][0]["text"].get<std::string>();
  const auto generate =
      testing::run_command("sh -c '" + testing::mpirun_kvshrink(2) + " generate -m " + testing::model_path() +
                               " -c 1024 --kv-memory 64MiB -p \"The capital of France is\" -n 8 "
                               "--temperature 0 --no-stats 2>/dev/null'",
                           120);
  ASSERT_EQ(generate.exit_code, 0) << generate.output;
  EXPECT_EQ(generate.output, text + "\n");

  const auto& c = ids.at("chat");
  ASSERT_EQ(c["response"]["status_code"], 200) << c.dump();
  EXPECT_EQ(c["response"]["body"]["object"], "chat.completion");  // "stream": true runs whole
  EXPECT_FALSE(c["response"]["body"]["choices"][0]["message"]["content"].get<std::string>().empty());

  const auto& p = ids.at("press");
  ASSERT_EQ(p["response"]["status_code"], 200) << p.dump();
  EXPECT_EQ(p["response"]["body"]["kv"]["press"], "snapkv");
  EXPECT_LT(p["response"]["body"]["kv"]["share_at_compression"].get<double>(), 0.75) << p.dump();

  const auto& url = ids.at("bad-url");
  EXPECT_EQ(url["response"]["status_code"], 404);
  EXPECT_EQ(url["error"]["code"], "invalid_url");
  EXPECT_EQ(url["response"]["body"]["error"]["code"], "invalid_url");
  const auto& temperature = ids.at("bad-temperature");
  EXPECT_EQ(temperature["response"]["status_code"], 422);
  EXPECT_EQ(temperature["response"]["body"]["error"]["param"], "temperature");

  std::vector<std::string> unnamed;  // the bad JSON (line 3) and the duplicate (line 8)
  for (const auto& r : records) {
    if (!r["custom_id"].is_null()) continue;
    unnamed.push_back(r["id"].get<std::string>());
    EXPECT_EQ(r["response"]["status_code"], 400) << r.dump();
  }
  EXPECT_EQ(unnamed, (std::vector<std::string>{"batch_req_line_3", "batch_req_line_8"}));

  // Everything has a record: a second run writes nothing and does not load the model.
  const std::string before = read_text(output());
  const auto again = batch(2);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(read_text(output()), before);
  EXPECT_NE(again.output.find("7 lines, 7 already done"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("running on"), std::string::npos) << again.output;
}

TEST_F(BatchCommandTest, ResumeDropsATornLastLineAndRunsOnlyTheMissingLines) {
  write_input({completion_line("a", "One", 3).dump(), completion_line("b", "Two", 3).dump(),
               completion_line("c", "Three", 3).dump(), completion_line("d", "Four", 3).dump()});
  const json kept = {{"id", "batch_req_kept"},
                     {"custom_id", "a"},
                     {"response", {{"status_code", 200}, {"body", {{"marker", "from the first run"}}}}},
                     {"error", nullptr}};
  const std::string torn = R"({"id": "batch_req_torn", "custom_id": "b", "response": {"status_co)";
  write_text(output(), kept.dump() + "\n" + torn);

  const auto result = batch(0);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("4 lines, 1 already done (a torn last line of " + std::to_string(torn.size()) +
                               " bytes dropped)"),
            std::string::npos)
      << result.output;
  const auto records = read_records(output());
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0], kept);  // not run again
  const auto ids = by_custom_id(records);
  ASSERT_EQ(ids.size(), 4u);
  for (const char* id : {"b", "c", "d"}) EXPECT_EQ(ids.at(id)["response"]["status_code"], 200) << id;
}

TEST_F(BatchCommandTest, SigtermStopsWithExit75AndASecondRunCompletes) {
  interrupt_and_resume(0);
}

TEST_F(BatchCommandTest, SigtermToRankZeroUnderMpirunStopsAllRanksWithExit75) {
  interrupt_and_resume(2);
}

TEST_F(BatchCommandTest, BadFilesFailBeforeTheModelLoads) {
  const auto missing =
      testing::run_command(testing::mpirun_kvshrink(2) + " batch -m " + testing::model_path() + " -i " +
                               (dir_ / "none.jsonl").string() + " -o " + output().string(),
                           60);
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_EQ(testing::count_occurrences(missing.output, "kvshrink: error:"), 1u) << missing.output;
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;

  write_input({completion_line("a", "One", 3).dump()});
  write_text(output(), "{\"custom_id\": \"a\"}\n" + completion_line("b", "not a record", 3).dump() + "\n");
  const auto not_results = batch(2);
  EXPECT_EQ(not_results.exit_code, 1) << not_results.output;
  EXPECT_EQ(testing::count_occurrences(not_results.output, "kvshrink: error:"), 1u) << not_results.output;
  EXPECT_NE(not_results.output.find("line 1: not a batch result record"), std::string::npos)
      << not_results.output;
  EXPECT_EQ(not_results.output.find("running on"), std::string::npos) << not_results.output;
}

}  // namespace
}  // namespace kvshrink
