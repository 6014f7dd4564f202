// samples.jsonl on fixture files: a torn last line is cut back to the last complete line, a bad
// record names its file and line; result files report a full disk (/dev/full) instead of ending
// empty.
#include "eval/records_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "eval/output_file.h"

namespace kvshrink::eval {
namespace {

namespace fs = std::filesystem;

const std::string kRecord =
    R"({"sample_id":"passkey|512|50|0","task":"passkey","mode":"query-aware","context_length":512,)"
    R"("score":1.0,"kv_bytes_held":10.0,"kv_bytes_full":10.0,"setting":"full KV","press":"none"})";

class RecordsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = fs::temp_directory_path() / ("kvshrink_records_" + std::to_string(::getpid()) + ".jsonl");
  }
  void TearDown() override { fs::remove_all(file_); }

  void write(const std::string& text) { std::ofstream(file_, std::ios::binary) << text; }
  std::string text() const {
    std::ifstream in(file_, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }
  // The message read_records throws for the file as it is.
  std::string read_error() const {
    try {
      read_records(file_);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }

  fs::path file_;
};

TEST_F(RecordsFile, LastLineWithoutNewlineIsCut) {
  write(kRecord + "\n" + kRecord.substr(0, 40));
  EXPECT_EQ(drop_torn_last_line(file_), 40u);
  EXPECT_EQ(text(), kRecord + "\n");
  EXPECT_EQ(read_records(file_).size(), 1u);
}

TEST_F(RecordsFile, LastLineThatIsCutJsonIsCut) {
  write(kRecord + "\n" + kRecord.substr(0, 40) + "\n");
  EXPECT_EQ(drop_torn_last_line(file_), 41u);
  EXPECT_EQ(text(), kRecord + "\n");
}

TEST_F(RecordsFile, CompleteFileIsLeftAlone) {
  write(kRecord + "\n" + kRecord + "\n");
  EXPECT_EQ(drop_torn_last_line(file_), 0u);
  EXPECT_EQ(read_records(file_).size(), 2u);
  fs::remove(file_);
  EXPECT_EQ(drop_torn_last_line(file_), 0u);  // no file yet
  EXPECT_TRUE(read_records(file_).empty());
}

TEST_F(RecordsFile, BadRecordNamesFileAndLine) {
  write(kRecord + "\n" + R"({"task":"passkey"})" + "\n");
  EXPECT_NE(read_error().find(file_.string() + "' line 2: 'sample_id' is missing"), std::string::npos)
      << read_error();
  write("not json\n" + kRecord + "\n");
  EXPECT_NE(read_error().find("line 1: not a JSON record"), std::string::npos) << read_error();
  write(R"({"sample_id":"a","task":"t","mode":"m","context_length":"512","score":1,)"
        R"("kv_bytes_held":1,"kv_bytes_full":1})"
        "\n");
  EXPECT_NE(read_error().find("'context_length' is missing or not an integer"), std::string::npos)
      << read_error();
}

TEST_F(RecordsFile, FolderIsNotARecordsFile) {
  fs::create_directories(file_);
  EXPECT_THROW(drop_torn_last_line(file_), std::runtime_error);
  EXPECT_NE(read_error().find("is not a regular file"), std::string::npos) << read_error();
}

TEST(OutputFile, FullDiskIsAnError) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  EXPECT_THROW(write_file("/dev/full", "summary"), std::runtime_error);
  AppendFile records("/dev/full");
  try {
    records.append_line(kRecord);
    FAIL() << "no error on a full disk";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
  }
}

TEST(OutputFile, FolderInTheFilesPlaceIsAnError) {
  const fs::path folder = fs::temp_directory_path() / ("kvshrink_output_" + std::to_string(::getpid()));
  fs::create_directories(folder);
  EXPECT_THROW(write_file(folder, "summary"), std::runtime_error);
  EXPECT_THROW(AppendFile{folder}, std::runtime_error);
  fs::remove_all(folder);
}

}  // namespace
}  // namespace kvshrink::eval
