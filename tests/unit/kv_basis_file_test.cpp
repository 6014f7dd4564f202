// The kv basis side file (engine/compression/kv_basis_file.h): a write/read round trip is exact
// (per-head and joint bases, importance weights), a basis for another model is refused by
// check_kv_basis_fits, corrupted or malformed files are refused by read_kv_basis with an error
// naming the file and what was wrong, and predict_importance is the documented dot product.
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

// A valid basis: per (layer, head) and per layer (joint, D = 24), the PCA of a few pseudo-random
// vectors (orthonormal, sorted); pseudo-random importance weights.
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
    for (int64_t i = 0; i < 2 * d + 1; ++i) basis.importance.push_back(next());
  }
  basis.joint_dim = basis.n_kv_heads * d;
  const int64_t joint = basis.joint_dim;
  for (int64_t layer = 0; layer < basis.n_layers; ++layer) {
    for (auto* which : {&basis.joint_key_basis, &basis.joint_value_basis}) {
      std::vector<float> x(static_cast<size_t>(40 * joint));
      for (auto& v : x) v = next();
      const Pca p = pca(x, 40, joint);
      which->insert(which->end(), p.components.begin(), p.components.end());
      auto* energy = which == &basis.joint_key_basis ? &basis.joint_key_energy : &basis.joint_value_energy;
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
    const auto joint = d * h;
    GgufWriter writer;
    writer.set_string("general.type", "kvshrink.kv_basis");
    writer.set_string("kvshrink.kv_basis.model", b.model);
    writer.set_string("kvshrink.kv_basis.key_space", key_space_name(b.key_space));
    edit_writer(writer);
    if (!b.key_basis.empty()) writer.add_f32_tensor("key_basis", {d, d, h, l}, b.key_basis);
    if (!b.value_basis.empty()) writer.add_f32_tensor("value_basis", {d, d, h, l}, b.value_basis);
    if (!b.key_energy.empty()) writer.add_f32_tensor("key_energy", {d, h, l}, b.key_energy);
    if (!b.value_energy.empty()) writer.add_f32_tensor("value_energy", {d, h, l}, b.value_energy);
    // The importance tensor takes its dims from the array, so a wrong-size one can be written.
    if (!b.importance.empty()) {
      const auto per_head = static_cast<uint64_t>(b.importance.size()) / (h * l);
      writer.add_f32_tensor("importance_weights", {per_head, h, l}, b.importance);
    }
    if (!b.joint_key_basis.empty())
      writer.add_f32_tensor("joint_key_basis", {joint, joint, l}, b.joint_key_basis);
    if (!b.joint_value_basis.empty())
      writer.add_f32_tensor("joint_value_basis", {joint, joint, l}, b.joint_value_basis);
    if (!b.joint_key_energy.empty())
      writer.add_f32_tensor("joint_key_energy", {joint, l}, b.joint_key_energy);
    if (!b.joint_value_energy.empty())
      writer.add_f32_tensor("joint_value_energy", {joint, l}, b.joint_value_energy);
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
  EXPECT_EQ(back.importance, basis.importance);
  EXPECT_EQ(back.joint_dim, 24);
  EXPECT_EQ(back.joint_key_basis, basis.joint_key_basis);
  EXPECT_EQ(back.joint_value_basis, basis.joint_value_basis);
  EXPECT_EQ(back.joint_key_energy, basis.joint_key_energy);
  EXPECT_EQ(back.joint_value_energy, basis.joint_value_energy);
  // Block accessors: (layer 1, head 2) is the last block.
  EXPECT_EQ(back.key(1, 2).data(), back.key_basis.data() + 5 * 64);
  EXPECT_EQ(back.value_energies(1, 2).size(), 8u);
  EXPECT_EQ(back.importance_weights(1, 2).data(), back.importance.data() + 5 * 17);
  EXPECT_EQ(back.importance_weights(1, 2).size(), 17u);
  EXPECT_EQ(back.joint_key(1).data(), back.joint_key_basis.data() + 24 * 24);
  EXPECT_EQ(back.joint_value(0).size(), 24u * 24u);
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
  basis = test_basis();
  basis.importance.push_back(0.0f);
  EXPECT_THROW(write_kv_basis(dir_ / "x.gguf", basis), std::invalid_argument);
  basis = test_basis();
  basis.joint_value_basis.resize(24 * 24);
  EXPECT_THROW(write_kv_basis(dir_ / "x.gguf", basis), std::invalid_argument);
  basis = test_basis();
  basis.joint_key_energy.pop_back();
  EXPECT_THROW(write_kv_basis(dir_ / "x.gguf", basis), std::invalid_argument);
  basis = test_basis();
  basis.joint_dim = 8;
  EXPECT_THROW(write_kv_basis(dir_ / "x.gguf", basis), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "x.gguf"));
}

// predict_importance = w[0, d) . key + w[d, 2d) . value + w[2d], checked on a hand-made case.
TEST_F(KvBasisFile, PredictImportanceIsTheDotProduct) {
  const std::vector<float> weights = {1.0f, -2.0f, 0.5f, 3.0f, 0.25f};  // d = 2: key, value, bias
  const float key[] = {2.0f, 1.0f};
  const float value[] = {4.0f, -8.0f};
  // 1*2 - 2*1 + 0.5*4 + 3*(-8) + 0.25 = -21.75
  EXPECT_FLOAT_EQ(predict_importance(weights, key, value, 2), -21.75f);
  // The weights of a round-tripped file, at (layer 1, head 0).
  const KvBasis basis = test_basis();
  write_kv_basis(dir_ / "model.kvbasis.gguf", basis);
  const KvBasis back = read_kv_basis(dir_ / "model.kvbasis.gguf");
  std::vector<float> k(8);
  std::vector<float> v(8);
  for (int i = 0; i < 8; ++i) {
    k[static_cast<size_t>(i)] = 0.1f * static_cast<float>(i + 1);
    v[static_cast<size_t>(i)] = -0.2f * static_cast<float>(i);
  }
  const auto w = back.importance_weights(1, 0);
  double expected = w[16];
  for (int i = 0; i < 8; ++i)
    expected += static_cast<double>(w[i]) * k[i] + static_cast<double>(w[8 + i]) * v[i];
  EXPECT_NEAR(predict_importance(w, k.data(), v.data(), 8), expected, 1e-5);
  EXPECT_THROW(predict_importance(std::span<const float>(weights).first(4), key, value, 2),
               std::invalid_argument);
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

TEST_F(KvBasisFile, CorruptedImportanceAndJointTensorsAreRefused) {
  // Importance weights of the wrong size: 2d (16) instead of 2d + 1 (17) per head.
  expect_refused([](KvBasis& b) { b.importance.resize(6 * 16); }, no_writer_edit,
                 "tensor 'importance_weights' has dims [16, 3, 2], expected [17, 3, 2]");
  // A non-finite importance weight.
  expect_refused([](KvBasis& b) { b.importance[20] = std::numeric_limits<float>::infinity(); },
                 no_writer_edit, "tensor 'importance_weights' has a value that is not finite");
  // Importance or a joint tensor missing.
  expect_refused([](KvBasis& b) { b.importance.clear(); }, no_writer_edit, "no tensor 'importance_weights'");
  expect_refused([](KvBasis& b) { b.joint_value_energy.clear(); }, no_writer_edit,
                 "no tensor 'joint_value_energy'");
  // A joint basis that is not orthonormal (layer 1: two vectors equal; layer 0: one vector scaled).
  expect_refused(
      [](KvBasis& b) {
        for (int i = 0; i < 24; ++i) b.joint_key_basis[24 * 24 + 5 * 24 + i] = b.joint_key_basis[24 * 24 + i];
      },
      no_writer_edit, "'joint_key_basis' of layer 1: vectors 0 and 5");
  expect_refused(
      [](KvBasis& b) {
        for (int i = 0; i < 24; ++i) b.joint_value_basis[23 * 24 + i] *= 0.9f;
      },
      no_writer_edit, "not orthonormal");
  // Joint energies out of order, negative, or not finite.
  expect_refused([](KvBasis& b) { b.joint_key_energy[24 + 3] = b.joint_key_energy[24 + 2] * 2.0f + 1.0f; },
                 no_writer_edit, "'joint_key_energy' of layer 1: energies are not descending");
  expect_refused([](KvBasis& b) { b.joint_value_energy[23] = -0.5f; }, no_writer_edit, "energy 23");
  expect_refused([](KvBasis& b) { b.joint_value_basis[7] = std::numeric_limits<float>::quiet_NaN(); },
                 no_writer_edit, "tensor 'joint_value_basis' has a value that is not finite");
}

TEST_F(KvBasisFile, MismatchedJointShapesAreRefused) {
  const KvBasis b = test_basis();
  GgufWriter writer;
  writer.set_string("general.type", "kvshrink.kv_basis");
  writer.set_string("kvshrink.kv_basis.model", b.model);
  writer.set_string("kvshrink.kv_basis.key_space", "post-rope");
  writer.add_f32_tensor("key_basis", {8, 8, 3, 2}, b.key_basis);
  writer.add_f32_tensor("value_basis", {8, 8, 3, 2}, b.value_basis);
  writer.add_f32_tensor("key_energy", {8, 3, 2}, b.key_energy);
  writer.add_f32_tensor("value_energy", {8, 3, 2}, b.value_energy);
  writer.add_f32_tensor("importance_weights", {17, 3, 2}, b.importance);
  // D x D per layer but D = 16, not 3 kv heads x 8 (the floats of 2 layers of 24 x 24 would not
  // fit either: this is 16 x 16 x 4 = 1024 floats from the start of the array).
  const std::vector<float> wrong(b.joint_key_basis.begin(), b.joint_key_basis.begin() + 16 * 16 * 4);
  writer.add_f32_tensor("joint_key_basis", {16, 16, 4}, wrong);
  writer.add_f32_tensor("joint_value_basis", {24, 24, 2}, b.joint_value_basis);
  writer.add_f32_tensor("joint_key_energy", {24, 2}, b.joint_key_energy);
  writer.add_f32_tensor("joint_value_energy", {24, 2}, b.joint_value_energy);
  const auto path = dir_ / "joint.kvbasis.gguf";
  writer.write(path);
  try {
    read_kv_basis(path);
    ADD_FAILURE() << "accepted";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("tensor 'joint_key_basis' has dims [16, 16, 4], expected [24, 24, 2]"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  }
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
  };  // the importance and joint tensors are not reached: the per-head shapes fail first
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
