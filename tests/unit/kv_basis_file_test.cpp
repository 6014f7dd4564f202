// The kv basis side file (engine/compression/kv_basis_file.h): a write/read round trip is exact, a
// basis for another model is refused by check_kv_basis_fits, and corrupted or malformed files are
// refused by read_kv_basis with an error naming the file and what was wrong.
#include "engine/compression/kv_basis_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "engine/compression/pca.h"
#include "engine/gguf/gguf_writer.h"

namespace kvshrink::engine {
namespace {

constexpr const char* kModel = "test model | layers 2 heads 6/3 dim 48 ffn 96 vocab 100";

LlamaConfig test_config() {
  LlamaConfig config;
  config.n_layers = 2;
  config.n_embd = 48;
  config.n_ff = 96;
  config.n_head = 6;
  config.n_head_kv = 3;
  config.head_dim = 8;
  config.vocab_size = 100;
  return config;
}

// A valid basis: per (layer, head), the PCA of a few pseudo-random vectors (orthonormal, sorted).
KvBasis test_basis() {
  KvBasis basis;
  basis.model = kModel;
  basis.key_space = KeySpace::kPreRope;
  basis.n_layers = 2;
  basis.n_kv_heads = 3;
  basis.head_dim = 8;
  basis.tokens = 1234;
  basis.chunk = 256;
  basis.offsets = {0, 2048};
  basis.text = "a.txt, b.txt";
  const int64_t d = basis.head_dim;
  uint32_t state = 12345;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / static_cast<float>(1u << 24) - 0.5f;
  };
  for (int64_t block = 0; block < basis.heads(); ++block) {
    for (auto* which : {&basis.key_basis, &basis.value_basis}) {
      std::vector<float> x(static_cast<size_t>(20 * d));
      for (auto& v : x) v = next();
      const Pca p = pca(x, 20, d);
      which->insert(which->end(), p.components.begin(), p.components.end());
      auto* energy = which == &basis.key_basis ? &basis.key_energy : &basis.value_energy;
      energy->insert(energy->end(), p.eigenvalues.begin(), p.eigenvalues.end());
    }
  }
  return basis;
}

class KvBasisFile : public ::testing::Test {
 protected:
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes the file the way write_kv_basis does, with `edit` applied to the writer's inputs, and
  // expects read_kv_basis to refuse it with a message holding `expected` and the file's path.
  void expect_refused(const std::function<void(KvBasis&)>& edit_basis,
                      const std::function<void(GgufWriter&)>& edit_writer, const std::string& expected) {
    KvBasis b = test_basis();
    edit_basis(b);
    const auto d = static_cast<uint64_t>(b.head_dim);
    const auto h = static_cast<uint64_t>(b.n_kv_heads);
    const auto l = static_cast<uint64_t>(b.n_layers);
    GgufWriter writer;
    writer.set_string("general.type", "kvshrink.kv_basis");
    writer.set_string("kvshrink.kv_basis.model", b.model);
    writer.set_string("kvshrink.kv_basis.key_space", key_space_name(b.key_space));
    edit_writer(writer);
    if (!b.key_basis.empty()) writer.add_f32_tensor("key_basis", {d, d, h, l}, b.key_basis);
    if (!b.value_basis.empty()) writer.add_f32_tensor("value_basis", {d, d, h, l}, b.value_basis);
    if (!b.key_energy.empty()) writer.add_f32_tensor("key_energy", {d, h, l}, b.key_energy);
    if (!b.value_energy.empty()) writer.add_f32_tensor("value_energy", {d, h, l}, b.value_energy);
    const auto path = dir_ / "bad.kvbasis.gguf";
    writer.write(path);
    try {
      read_kv_basis(path);
      ADD_FAILURE() << "accepted; expected an error with: " << expected;
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(expected), std::string::npos) << message;
      EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    }
  }

  std::filesystem::path dir_ =
      std::filesystem::temp_directory_path() / ("kvshrink_kv_basis_test_" + std::to_string(::getpid()));
};

void no_edit(KvBasis&) {}
void no_writer_edit(GgufWriter&) {}

TEST_F(KvBasisFile, RoundTripIsExact) {
  const KvBasis basis = test_basis();
  const auto path = dir_ / "model.kvbasis.gguf";
  write_kv_basis(path, basis);
  const KvBasis back = read_kv_basis(path);
  EXPECT_EQ(back.model, basis.model);
  EXPECT_EQ(back.key_space, KeySpace::kPreRope);
  EXPECT_EQ(back.n_layers, 2);
  EXPECT_EQ(back.n_kv_heads, 3);
  EXPECT_EQ(back.head_dim, 8);
  EXPECT_EQ(back.tokens, 1234);
  EXPECT_EQ(back.chunk, 256);
  EXPECT_EQ(back.text, basis.text);
  EXPECT_EQ(back.offsets, (std::vector<int32_t>{0, 2048}));
  EXPECT_EQ(back.key_basis, basis.key_basis);
  EXPECT_EQ(back.value_basis, basis.value_basis);
  EXPECT_EQ(back.key_energy, basis.key_energy);
  EXPECT_EQ(back.value_energy, basis.value_energy);
  // Block accessors: (layer 1, head 2) is the last block.
  EXPECT_EQ(back.key(1, 2).data(), back.key_basis.data() + 5 * 64);
  EXPECT_EQ(back.value_energies(1, 2).size(), 8u);
  EXPECT_NO_THROW(check_kv_basis_fits(back, kModel, test_config(), path));
}

TEST_F(KvBasisFile, DefaultPathIsNextToTheModel) {
  EXPECT_EQ(default_kv_basis_path("models/m.gguf"), std::filesystem::path("models/m.kvbasis.gguf"));
  EXPECT_EQ(default_kv_basis_path("m"), std::filesystem::path("m.kvbasis.gguf"));
}

TEST_F(KvBasisFile, KeySpaceNames) {
  EXPECT_EQ(parse_key_space("post-rope"), KeySpace::kPostRope);
  EXPECT_EQ(parse_key_space("pre-rope"), KeySpace::kPreRope);
  EXPECT_STREQ(key_space_name(KeySpace::kPostRope), "post-rope");
  EXPECT_THROW(parse_key_space("rope"), std::invalid_argument);
}

TEST_F(KvBasisFile, AnotherModelIsRefused) {
  const KvBasis basis = test_basis();
  const auto path = dir_ / "model.kvbasis.gguf";
  write_kv_basis(path, basis);
  const KvBasis back = read_kv_basis(path);
  auto expect_misfit = [&](const std::string& identity, const LlamaConfig& config) {
    try {
      check_kv_basis_fits(back, identity, config, path);
      ADD_FAILURE() << "a basis for another model was accepted";
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("made for another model"), std::string::npos) << message;
      EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    }
  };
  expect_misfit("another model | layers 2 heads 6/3 dim 48 ffn 96 vocab 100", test_config());
  LlamaConfig more_layers = test_config();
  more_layers.n_layers = 3;
  expect_misfit(kModel, more_layers);
  LlamaConfig more_heads = test_config();
  more_heads.n_head_kv = 6;
  expect_misfit(kModel, more_heads);
  LlamaConfig wider = test_config();
  wider.head_dim = 16;
  expect_misfit(kModel, wider);
}

TEST_F(KvBasisFile, WriteRefusesInconsistentArrays) {
  KvBasis basis = test_basis();
  basis.value_energy.pop_back();
  EXPECT_THROW(write_kv_basis(dir_ / "x.gguf", basis), std::invalid_argument);
  basis = test_basis();
  basis.n_layers = 0;
  EXPECT_THROW(write_kv_basis(dir_ / "x.gguf", basis), std::invalid_argument);
}

TEST_F(KvBasisFile, NotABasisFile) {
  GgufWriter writer;
  writer.set_string("general.type", "kvshrink.head_profile");
  writer.write(dir_ / "profile.gguf");
  try {
    read_kv_basis(dir_ / "profile.gguf");
    ADD_FAILURE() << "accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not a kv basis file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_kv_basis(dir_ / "absent.gguf"), std::runtime_error);
}

TEST_F(KvBasisFile, CorruptedFilesAreRefused) {
  // Unknown key space.
  expect_refused(
      no_edit, [](GgufWriter& w) { w.set_string("kvshrink.kv_basis.key_space", "sideways"); },
      "unknown key space");
  // A negative calibration offset.
  expect_refused(
      no_edit,
      [](GgufWriter& w) {
        w.set_int32_array("kvshrink.kv_basis.offsets", {0, -5});
      },
      "calibration offset -5");
  // A tensor missing.
  expect_refused([](KvBasis& b) { b.value_energy.clear(); }, no_writer_edit, "no tensor 'value_energy'");
  // A basis that is not orthonormal (one vector scaled).
  expect_refused(
      [](KvBasis& b) {
        for (int i = 0; i < 8; ++i) b.value_basis[3 * 64 + 8 + i] *= 1.1f;
      },
      no_writer_edit, "not orthonormal");
  // A basis that is not orthonormal (two vectors equal).
  expect_refused(
      [](KvBasis& b) {
        for (int i = 0; i < 8; ++i) b.key_basis[8 + i] = b.key_basis[i];
      },
      no_writer_edit, "not orthonormal");
  // A non-finite value.
  expect_refused([](KvBasis& b) { b.key_basis[17] = std::numeric_limits<float>::quiet_NaN(); },
                 no_writer_edit, "not finite");
  // Negative and out-of-order energies.
  expect_refused([](KvBasis& b) { b.key_energy[7] = -1.0f; }, no_writer_edit, "energy 7");
  expect_refused([](KvBasis& b) { b.value_energy[8 + 2] = b.value_energy[8 + 1] * 2.0f + 1.0f; },
                 no_writer_edit, "not descending");
}

TEST_F(KvBasisFile, MismatchedShapesAreRefused) {
  auto write_and_expect = [&](const std::function<void(GgufWriter&, const KvBasis&)>& add_tensors,
                              const std::string& expected) {
    const KvBasis b = test_basis();
    GgufWriter writer;
    writer.set_string("general.type", "kvshrink.kv_basis");
    writer.set_string("kvshrink.kv_basis.model", b.model);
    writer.set_string("kvshrink.kv_basis.key_space", "post-rope");
    add_tensors(writer, b);
    const auto path = dir_ / "shape.kvbasis.gguf";
    writer.write(path);
    try {
      read_kv_basis(path);
      ADD_FAILURE() << "accepted; expected " << expected;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  auto add_rest = [](GgufWriter& w, const KvBasis& b) {
    w.add_f32_tensor("value_basis", {8, 8, 3, 2}, b.value_basis);
    w.add_f32_tensor("key_energy", {8, 3, 2}, b.key_energy);
    w.add_f32_tensor("value_energy", {8, 3, 2}, b.value_energy);
  };
  // key_basis not square per head: [8, 16, 3, 1] holds as many floats as [8, 8, 3, 2].
  write_and_expect(
      [&](GgufWriter& w, const KvBasis& b) {
        w.add_f32_tensor("key_basis", {8, 16, 3, 1}, b.key_basis);
        add_rest(w, b);
      },
      "expected [d, d, kv heads, layers]");
  // key_basis 3-D.
  write_and_expect(
      [&](GgufWriter& w, const KvBasis& b) {
        w.add_f32_tensor("key_basis", {8, 8, 6}, b.key_basis);
        add_rest(w, b);
      },
      "not an F32 4-D tensor");
  // value_basis with heads and layers swapped (same element count).
  write_and_expect(
      [&](GgufWriter& w, const KvBasis& b) {
        w.add_f32_tensor("key_basis", {8, 8, 3, 2}, b.key_basis);
        w.add_f32_tensor("value_basis", {8, 8, 2, 3}, b.value_basis);
        w.add_f32_tensor("key_energy", {8, 3, 2}, b.key_energy);
        w.add_f32_tensor("value_energy", {8, 3, 2}, b.value_energy);
      },
      "tensor 'value_basis' has dims [8, 8, 2, 3], expected [8, 8, 3, 2]");
  // key_energy too short for the shape.
  write_and_expect(
      [&](GgufWriter& w, const KvBasis& b) {
        w.add_f32_tensor("key_basis", {8, 8, 3, 2}, b.key_basis);
        w.add_f32_tensor("value_basis", {8, 8, 3, 2}, b.value_basis);
        const std::vector<float> short_energy(b.key_energy.begin(), b.key_energy.begin() + 24);
        w.add_f32_tensor("key_energy", {8, 3, 1}, short_energy);
        w.add_f32_tensor("value_energy", {8, 3, 2}, b.value_energy);
      },
      "tensor 'key_energy' has dims");
  // Wrong tensor type.
  write_and_expect(
      [&](GgufWriter& w, const KvBasis& b) {
        w.add_f32_tensor("key_basis", {8, 8, 3, 2}, b.key_basis);
        w.add_f32_tensor("value_basis", {8, 8, 3, 2}, b.value_basis);
        const std::vector<std::byte> bytes(48 * 2, std::byte{0});
        w.add_tensor("key_energy", {8, 3, 2}, kernels::TensorType::F16, bytes);
        w.add_f32_tensor("value_energy", {8, 3, 2}, b.value_energy);
      },
      "tensor 'key_energy' is not an F32 3-D tensor");
}

}  // namespace
}  // namespace kvshrink::engine
