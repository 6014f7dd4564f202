#include "engine/compression/kv_basis_file.h"

#include <cblas.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "engine/compression/head_profile_file.h"
#include "engine/gguf/gguf_file.h"
#include "engine/gguf/gguf_writer.h"

namespace kvshrink::engine {

namespace {

constexpr const char* kType = "kvshrink.kv_basis";
constexpr const char* kKeyBasis = "key_basis";
constexpr const char* kValueBasis = "value_basis";
constexpr const char* kKeyEnergy = "key_energy";
constexpr const char* kValueEnergy = "value_energy";
constexpr const char* kImportance = "importance_weights";
constexpr const char* kJointKeyBasis = "joint_key_basis";
constexpr const char* kJointValueBasis = "joint_value_basis";
constexpr const char* kJointKeyEnergy = "joint_key_energy";
constexpr const char* kJointValueEnergy = "joint_value_energy";
// Largest |U^T U - I| entry a stored basis may have (float32 rounding of an orthonormal double
// basis is ~1e-7).
constexpr double kOrthonormalTolerance = 1e-3;
// Bounds that keep every size computation far from overflow; real models are far inside them.
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxHeads = int64_t{1} << 20;  // n_layers * n_kv_heads
constexpr int64_t kMaxJointDim = 16384;          // n_kv_heads * head_dim

size_t basis_floats(const KvBasis& b) {
  return static_cast<size_t>(b.heads() * b.head_dim * b.head_dim);
}
size_t energy_floats(const KvBasis& b) {
  return static_cast<size_t>(b.heads() * b.head_dim);
}
size_t importance_floats(const KvBasis& b) {
  return static_cast<size_t>(b.heads() * b.importance_features());
}
size_t joint_basis_floats(const KvBasis& b) {
  return static_cast<size_t>(b.n_layers * b.joint_dim * b.joint_dim);
}
size_t joint_energy_floats(const KvBasis& b) {
  return static_cast<size_t>(b.n_layers * b.joint_dim);
}

// Empty string when fine, else what is wrong with basis (d vectors of d floats, vector k
// contiguous). The Gram matrix U^T U (upper triangle, row-major [d x d]) comes from BLAS in double,
// so a joint basis (d = kv heads x head_dim) is checked as fast as a per-head one.
std::string check_orthonormal(std::span<const float> basis, int64_t d) {
  const std::vector<double> vectors(basis.begin(), basis.end());
  std::vector<double> gram(static_cast<size_t>(d * d), 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(d), static_cast<int>(d), 1.0,
              vectors.data(), static_cast<int>(d), 0.0, gram.data(), static_cast<int>(d));
  for (int64_t a = 0; a < d; ++a) {
    for (int64_t b = a; b < d; ++b) {
      const double dot = gram[static_cast<size_t>(a * d + b)];
      const double expected = a == b ? 1.0 : 0.0;
      if (!(std::abs(dot - expected) <= kOrthonormalTolerance)) {
        return fmt::format("vectors {} and {} have dot product {:.6g} (expected {})", a, b, dot, expected);
      }
    }
  }
  return {};
}

std::string check_energies(std::span<const float> energy) {
  for (size_t k = 0; k < energy.size(); ++k) {
    if (!std::isfinite(energy[k]) || energy[k] < 0) return fmt::format("energy {} is {}", k, energy[k]);
    if (k > 0 && energy[k] > energy[k - 1]) {
      return fmt::format("energies are not descending ({} {} > {} {})", k, energy[k], k - 1, energy[k - 1]);
    }
  }
  return {};
}

}  // namespace

const char* key_space_name(KeySpace space) {
  return space == KeySpace::kPreRope ? "pre-rope" : "post-rope";
}

KeySpace parse_key_space(const std::string& name) {
  if (name == "post-rope") return KeySpace::kPostRope;
  if (name == "pre-rope") return KeySpace::kPreRope;
  throw std::invalid_argument(fmt::format("unknown key space '{}' (expected post-rope or pre-rope)", name));
}

std::span<const float> KvBasis::key(int64_t layer, int64_t head) const {
  const auto block = static_cast<size_t>(head_dim * head_dim);
  return std::span<const float>(key_basis).subspan(static_cast<size_t>(layer * n_kv_heads + head) * block,
                                                   block);
}

std::span<const float> KvBasis::value(int64_t layer, int64_t head) const {
  const auto block = static_cast<size_t>(head_dim * head_dim);
  return std::span<const float>(value_basis)
      .subspan(static_cast<size_t>(layer * n_kv_heads + head) * block, block);
}

std::span<const float> KvBasis::key_energies(int64_t layer, int64_t head) const {
  const auto block = static_cast<size_t>(head_dim);
  return std::span<const float>(key_energy)
      .subspan(static_cast<size_t>(layer * n_kv_heads + head) * block, block);
}

std::span<const float> KvBasis::value_energies(int64_t layer, int64_t head) const {
  const auto block = static_cast<size_t>(head_dim);
  return std::span<const float>(value_energy)
      .subspan(static_cast<size_t>(layer * n_kv_heads + head) * block, block);
}

std::span<const float> KvBasis::importance_weights(int64_t layer, int64_t head) const {
  const auto block = static_cast<size_t>(importance_features());
  return std::span<const float>(importance)
      .subspan(static_cast<size_t>(layer * n_kv_heads + head) * block, block);
}

std::span<const float> KvBasis::joint_key(int64_t layer) const {
  const auto block = static_cast<size_t>(joint_dim * joint_dim);
  return std::span<const float>(joint_key_basis).subspan(static_cast<size_t>(layer) * block, block);
}

std::span<const float> KvBasis::joint_value(int64_t layer) const {
  const auto block = static_cast<size_t>(joint_dim * joint_dim);
  return std::span<const float>(joint_value_basis).subspan(static_cast<size_t>(layer) * block, block);
}

float predict_importance(std::span<const float> weights, const float* pre_rope_key, const float* value,
                         int64_t head_dim) {
  if (head_dim <= 0 || weights.size() != static_cast<size_t>(2 * head_dim + 1)) {
    throw std::invalid_argument(
        fmt::format("predict_importance: {} weights for head dimension {} (expected {})", weights.size(),
                    head_dim, 2 * head_dim + 1));
  }
  float sum = weights[static_cast<size_t>(2 * head_dim)];
  for (int64_t i = 0; i < head_dim; ++i) {
    sum += weights[static_cast<size_t>(i)] * pre_rope_key[i] +
           weights[static_cast<size_t>(head_dim + i)] * value[i];
  }
  return sum;
}

std::filesystem::path default_kv_basis_path(const std::filesystem::path& model) {
  return side_file_path(model, ".kvbasis.gguf");
}

void write_kv_basis(const std::filesystem::path& path, const KvBasis& basis) {
  if (basis.n_layers <= 0 || basis.n_kv_heads <= 0 || basis.head_dim <= 0 || basis.head_dim > kMaxHeadDim ||
      basis.heads() > kMaxHeads) {
    throw std::invalid_argument(fmt::format("write_kv_basis: bad shape {} layers x {} kv heads x dim {}",
                                            basis.n_layers, basis.n_kv_heads, basis.head_dim));
  }
  if (basis.offsets.empty()) throw std::invalid_argument("write_kv_basis: no calibration offsets");
  if (basis.joint_dim != basis.n_kv_heads * basis.head_dim || basis.joint_dim > kMaxJointDim) {
    throw std::invalid_argument(fmt::format("write_kv_basis: joint dimension {} is not {} kv heads x dim {}",
                                            basis.joint_dim, basis.n_kv_heads, basis.head_dim));
  }
  const struct {
    const char* name;
    const std::vector<float>& array;
    size_t expected;
  } arrays[] = {
      {kKeyBasis, basis.key_basis, basis_floats(basis)},
      {kValueBasis, basis.value_basis, basis_floats(basis)},
      {kKeyEnergy, basis.key_energy, energy_floats(basis)},
      {kValueEnergy, basis.value_energy, energy_floats(basis)},
      {kImportance, basis.importance, importance_floats(basis)},
      {kJointKeyBasis, basis.joint_key_basis, joint_basis_floats(basis)},
      {kJointValueBasis, basis.joint_value_basis, joint_basis_floats(basis)},
      {kJointKeyEnergy, basis.joint_key_energy, joint_energy_floats(basis)},
      {kJointValueEnergy, basis.joint_value_energy, joint_energy_floats(basis)},
  };
  for (const auto& [name, array, expected] : arrays) {
    if (array.size() != expected) {
      throw std::invalid_argument(
          fmt::format("write_kv_basis: '{}' holds {} floats, {} layers x {} kv heads x dim {} need {}", name,
                      array.size(), basis.n_layers, basis.n_kv_heads, basis.head_dim, expected));
    }
  }
  const auto d = static_cast<uint64_t>(basis.head_dim);
  const auto h = static_cast<uint64_t>(basis.n_kv_heads);
  const auto l = static_cast<uint64_t>(basis.n_layers);
  const auto joint = static_cast<uint64_t>(basis.joint_dim);
  GgufWriter writer;
  writer.set_string("general.type", kType);
  writer.set_string("kvshrink.kv_basis.model", basis.model);
  writer.set_string("kvshrink.kv_basis.key_space", key_space_name(basis.key_space));
  writer.set_uint32("kvshrink.kv_basis.tokens", static_cast<uint32_t>(basis.tokens));
  writer.set_uint32("kvshrink.kv_basis.chunk", static_cast<uint32_t>(basis.chunk));
  writer.set_int32_array("kvshrink.kv_basis.offsets", basis.offsets);
  writer.set_string("kvshrink.kv_basis.text", basis.text);
  writer.add_f32_tensor(kKeyBasis, {d, d, h, l}, basis.key_basis);
  writer.add_f32_tensor(kValueBasis, {d, d, h, l}, basis.value_basis);
  writer.add_f32_tensor(kKeyEnergy, {d, h, l}, basis.key_energy);
  writer.add_f32_tensor(kValueEnergy, {d, h, l}, basis.value_energy);
  writer.add_f32_tensor(kImportance, {2 * d + 1, h, l}, basis.importance);
  writer.add_f32_tensor(kJointKeyBasis, {joint, joint, l}, basis.joint_key_basis);
  writer.add_f32_tensor(kJointValueBasis, {joint, joint, l}, basis.joint_value_basis);
  writer.add_f32_tensor(kJointKeyEnergy, {joint, l}, basis.joint_key_energy);
  writer.add_f32_tensor(kJointValueEnergy, {joint, l}, basis.joint_value_energy);
  writer.write(path);
}

KvBasis read_kv_basis(const std::filesystem::path& path) {
  auto fail = [&](const std::string& what) {
    return std::runtime_error(fmt::format("kv basis '{}': {}", path.string(), what));
  };
  const auto file = GgufFile::open(path);
  if (file.find_string("general.type").value_or("") != kType) {
    throw fail(
        "not a kv basis file (general.type is not kvshrink.kv_basis); make one with `kvshrink calibrate`");
  }
  KvBasis basis;
  basis.model = file.get_string("kvshrink.kv_basis.model");
  const std::string space = file.get_string("kvshrink.kv_basis.key_space");
  try {
    basis.key_space = parse_key_space(space);
  } catch (const std::invalid_argument& e) {
    throw fail(e.what());
  }
  basis.tokens = static_cast<int64_t>(file.find_uint("kvshrink.kv_basis.tokens").value_or(0));
  basis.chunk = static_cast<int64_t>(file.find_uint("kvshrink.kv_basis.chunk").value_or(0));
  basis.text = file.find_string("kvshrink.kv_basis.text").value_or("");
  if (file.find("kvshrink.kv_basis.offsets")) {
    const auto offsets = file.get_int_array("kvshrink.kv_basis.offsets");
    if (offsets.empty()) throw fail("kvshrink.kv_basis.offsets is empty");
    basis.offsets.clear();
    for (const int64_t offset : offsets) {
      if (offset < 0 || offset > std::numeric_limits<int32_t>::max()) {
        throw fail(fmt::format("calibration offset {} is out of range", offset));
      }
      basis.offsets.push_back(static_cast<int32_t>(offset));
    }
  }

  // The shape comes from key_basis; every other tensor must agree with it.
  auto tensor = [&](const char* name, size_t n_dims) -> const GgufTensorInfo& {
    const auto* info = file.find_tensor(name);
    if (!info) throw fail(fmt::format("no tensor '{}'", name));
    if (info->type != kernels::TensorType::F32 || info->dims.size() != n_dims) {
      throw fail(fmt::format("tensor '{}' is not an F32 {}-D tensor", name, n_dims));
    }
    return *info;
  };
  const auto& key_info = tensor(kKeyBasis, 4);
  const auto& dims = key_info.dims;
  if (dims[0] == 0 || dims[0] > static_cast<uint64_t>(kMaxHeadDim) || dims[1] != dims[0] || dims[2] == 0 ||
      dims[3] == 0 || dims[2] > static_cast<uint64_t>(kMaxHeads) ||
      dims[3] > static_cast<uint64_t>(kMaxHeads) || dims[2] * dims[3] > static_cast<uint64_t>(kMaxHeads)) {
    throw fail(fmt::format("tensor 'key_basis' has dims [{}, {}, {}, {}], expected [d, d, kv heads, layers]",
                           dims[0], dims[1], dims[2], dims[3]));
  }
  basis.head_dim = static_cast<int64_t>(dims[0]);
  basis.n_kv_heads = static_cast<int64_t>(dims[2]);
  basis.n_layers = static_cast<int64_t>(dims[3]);

  auto load = [&](const char* name, const std::vector<uint64_t>& expected) {
    const auto& info = tensor(name, expected.size());
    if (info.dims != expected) {
      throw fail(fmt::format("tensor '{}' has dims [{}], expected [{}]", name, fmt::join(info.dims, ", "),
                             fmt::join(expected, ", ")));
    }
    const auto bytes = file.tensor_data(info);
    std::vector<float> values(static_cast<size_t>(info.n_elements));
    if (bytes.size() != values.size() * sizeof(float))
      throw fail(fmt::format("tensor '{}' has the wrong size", name));
    std::memcpy(values.data(), bytes.data(), bytes.size());
    for (float v : values) {
      if (!std::isfinite(v)) throw fail(fmt::format("tensor '{}' has a value that is not finite", name));
    }
    return values;
  };
  const uint64_t d = dims[0];
  basis.key_basis = load(kKeyBasis, {d, d, dims[2], dims[3]});
  basis.value_basis = load(kValueBasis, {d, d, dims[2], dims[3]});
  basis.key_energy = load(kKeyEnergy, {d, dims[2], dims[3]});
  basis.value_energy = load(kValueEnergy, {d, dims[2], dims[3]});
  basis.importance = load(kImportance, {2 * d + 1, dims[2], dims[3]});
  // D = H * d <= kMaxJointDim keeps D * D * L far from overflow (L <= kMaxHeads).
  const uint64_t joint = d * dims[2];
  if (joint > static_cast<uint64_t>(kMaxJointDim)) {
    throw fail(fmt::format("joint dimension {} kv heads x dim {} exceeds {}", dims[2], d, kMaxJointDim));
  }
  basis.joint_dim = static_cast<int64_t>(joint);
  basis.joint_key_basis = load(kJointKeyBasis, {joint, joint, dims[3]});
  basis.joint_value_basis = load(kJointValueBasis, {joint, joint, dims[3]});
  basis.joint_key_energy = load(kJointKeyEnergy, {joint, dims[3]});
  basis.joint_value_energy = load(kJointValueEnergy, {joint, dims[3]});

  for (int64_t layer = 0; layer < basis.n_layers; ++layer) {
    for (int64_t head = 0; head < basis.n_kv_heads; ++head) {
      const std::pair<const char*, std::string> problems[] = {
          {kKeyBasis, check_orthonormal(basis.key(layer, head), basis.head_dim)},
          {kValueBasis, check_orthonormal(basis.value(layer, head), basis.head_dim)},
          {kKeyEnergy, check_energies(basis.key_energies(layer, head))},
          {kValueEnergy, check_energies(basis.value_energies(layer, head))},
      };
      for (const auto& [name, problem] : problems) {
        if (!problem.empty()) {
          throw fail(fmt::format("'{}' of layer {} kv head {}: {}{}", name, layer, head, problem,
                                 std::string_view(name).ends_with("basis") ? " (not orthonormal)" : ""));
        }
      }
    }
    const auto joint_energies = [&](const std::vector<float>& energy) {
      return std::span<const float>(energy).subspan(static_cast<size_t>(layer * basis.joint_dim),
                                                    static_cast<size_t>(basis.joint_dim));
    };
    const std::pair<const char*, std::string> joint_problems[] = {
        {kJointKeyBasis, check_orthonormal(basis.joint_key(layer), basis.joint_dim)},
        {kJointValueBasis, check_orthonormal(basis.joint_value(layer), basis.joint_dim)},
        {kJointKeyEnergy, check_energies(joint_energies(basis.joint_key_energy))},
        {kJointValueEnergy, check_energies(joint_energies(basis.joint_value_energy))},
    };
    for (const auto& [name, problem] : joint_problems) {
      if (!problem.empty()) {
        throw fail(fmt::format("'{}' of layer {}: {}{}", name, layer, problem,
                               std::string_view(name).ends_with("basis") ? " (not orthonormal)" : ""));
      }
    }
  }
  return basis;
}

void check_kv_basis_fits(const KvBasis& basis, const std::string& identity, const LlamaConfig& config,
                         const std::filesystem::path& path) {
  if (basis.n_layers != config.n_layers || basis.n_kv_heads != config.n_head_kv ||
      basis.head_dim != config.head_dim || basis.model != identity) {
    throw std::runtime_error(
        fmt::format("kv basis '{}' was made for another model ({}; {} layers x {} kv heads x dim {}), this "
                    "one is {} ({} layers x {} kv heads x dim {}); make one with `kvshrink calibrate`",
                    path.string(), basis.model, basis.n_layers, basis.n_kv_heads, basis.head_dim, identity,
                    config.n_layers, config.n_head_kv, config.head_dim));
  }
}

}  // namespace kvshrink::engine
