#include "engine/gguf/gguf_writer.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

namespace kvshrink::engine {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr size_t kMaxTensorNameBytes = 63;  // ggml's GGML_MAX_NAME (64) includes the terminating NUL
constexpr size_t kMaxDims = 4;
constexpr std::string_view kAlignmentKey = "general.alignment";

// Index of an element type's alternative in GgufArray::elements (which has no ARRAY alternative).
size_t array_alternative(GgufValueType element_type) {
  const auto id = static_cast<size_t>(element_type);
  return id < static_cast<size_t>(GgufValueType::ARRAY) ? id : id - 1;
}

// The value's type tag agrees with what it holds, and arrays hold one non-array type.
void check_value(const std::string& key, const GgufValue& value) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument("GGUF key '" + key + "': " + what);
  };
  if (value.data.index() != static_cast<size_t>(value.type)) {
    fail(std::string("type tag ") + gguf_value_type_name(value.type) + " does not match the stored value");
  }
  if (value.type == GgufValueType::ARRAY) {
    const GgufArray& array = std::get<GgufArray>(value.data);
    if (array.element_type == GgufValueType::ARRAY) fail("nested arrays are not supported");
    if (array.elements.index() != array_alternative(array.element_type)) {
      fail(std::string("array element tag ") + gguf_value_type_name(array.element_type) +
           " does not match the stored elements");
    }
  }
}

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return x + (alignment - x % alignment) % alignment;
}

// Appends little-endian GGUF encodings to a byte buffer.
class ByteSink {
 public:
  static_assert(std::endian::native == std::endian::little, "GGUF writes assume a little-endian host");

  template <typename T>
  requires std::is_arithmetic_v<T>
  void put(T x) { put_bytes(&x, sizeof(T)); }
  void put_bool(bool x) { put<uint8_t>(x ? 1 : 0); }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    put_bytes(s.data(), s.size());
  }
  void put_bytes(const void* data, size_t n) {
    const size_t start = bytes_.size();
    bytes_.resize(start + n);
    if (n > 0) std::memcpy(bytes_.data() + start, data, n);
  }
  void pad_to(uint64_t alignment) { bytes_.resize(align_up(bytes_.size(), alignment), std::byte{0}); }

  // Value encodings: scalars as is, strings length-prefixed, arrays as element type, count, elements.
  void put_value(const GgufValue& value) {
    std::visit([&](const auto& x) { put_payload(x); }, value.data);
  }

  std::vector<std::byte> take() { return std::move(bytes_); }

 private:
  template <typename T>
  void put_payload(const T& x) {
    put(x);
  }
  void put_payload(bool x) { put_bool(x); }
  void put_payload(const std::string& s) { put_string(s); }
  void put_payload(const GgufArray& array) {
    put<uint32_t>(static_cast<uint32_t>(array.element_type));
    std::visit(
        [&](const auto& elements) {
          put<uint64_t>(elements.size());
          for (const auto& element : elements) put_payload(element);
        },
        array.elements);
  }

  std::vector<std::byte> bytes_;
};

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment < 8 || !std::has_single_bit(alignment)) {
    throw std::invalid_argument("GGUF alignment " + std::to_string(alignment) +
                                " is not a power of two and a multiple of 8");
  }
}

void GgufWriter::set(std::string key, GgufValue value) {
  if (key == kAlignmentKey) {
    throw std::invalid_argument("GGUF key 'general.alignment' is set by the GgufWriter constructor");
  }
  check_value(key, value);
  const auto existing =
      std::find_if(metadata_.begin(), metadata_.end(), [&](const auto& kv) { return kv.first == key; });
  if (existing != metadata_.end()) {
    existing->second = std::move(value);
  } else {
    metadata_.emplace_back(std::move(key), std::move(value));
  }
}

void GgufWriter::set_uint32(std::string key, uint32_t value) {
  set(std::move(key), {GgufValueType::UINT32, value});
}
void GgufWriter::set_int32(std::string key, int32_t value) {
  set(std::move(key), {GgufValueType::INT32, value});
}
void GgufWriter::set_float32(std::string key, float value) {
  set(std::move(key), {GgufValueType::FLOAT32, value});
}
void GgufWriter::set_bool(std::string key, bool value) {
  set(std::move(key), {GgufValueType::BOOL, value});
}
void GgufWriter::set_string(std::string key, std::string value) {
  set(std::move(key), {GgufValueType::STRING, std::move(value)});
}
void GgufWriter::set_string_array(std::string key, std::vector<std::string> values) {
  set(std::move(key), {GgufValueType::ARRAY, GgufArray{GgufValueType::STRING, std::move(values)}});
}
void GgufWriter::set_int32_array(std::string key, std::vector<int32_t> values) {
  set(std::move(key), {GgufValueType::ARRAY, GgufArray{GgufValueType::INT32, std::move(values)}});
}
void GgufWriter::set_float32_array(std::string key, std::vector<float> values) {
  set(std::move(key), {GgufValueType::ARRAY, GgufArray{GgufValueType::FLOAT32, std::move(values)}});
}

void GgufWriter::add_tensor(std::string name, std::vector<uint64_t> dims, kernels::TensorType type,
                            std::span<const std::byte> data) {
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument("GGUF tensor '" + name + "': " + what);
  };
  if (name.size() > kMaxTensorNameBytes) fail("name is longer than 63 bytes");
  for (const PendingTensor& tensor : tensors_) {
    if (tensor.name == name) fail("duplicate tensor name");
  }
  if (dims.empty() || dims.size() > kMaxDims) fail("needs 1 to 4 dimensions");
  const kernels::TensorTypeInfo& info = kernels::tensor_type_info(type);
  uint64_t n_elements = 1;
  for (const uint64_t dim : dims) {
    if (dim == 0) fail("has a zero dimension");
    if (__builtin_mul_overflow(n_elements, dim, &n_elements)) fail("element count overflows 64 bits");
  }
  if (dims[0] % info.block_elements != 0) {
    fail("row length " + std::to_string(dims[0]) + " is not a multiple of the " + std::string(info.name) +
         " block size " + std::to_string(info.block_elements));
  }
  const uint64_t n_bytes = n_elements / info.block_elements * info.block_bytes;
  if (data.size() != n_bytes) {
    fail("data is " + std::to_string(data.size()) + " bytes, expected " + std::to_string(n_bytes));
  }
  tensors_.push_back({std::move(name), std::move(dims), type, {data.begin(), data.end()}});
}

void GgufWriter::add_f32_tensor(std::string name, std::vector<uint64_t> dims, std::span<const float> data) {
  add_tensor(std::move(name), std::move(dims), kernels::TensorType::F32, std::as_bytes(data));
}

std::vector<std::byte> GgufWriter::to_bytes() const {
  const bool write_alignment = alignment_ != kDefaultAlignment;
  ByteSink sink;
  sink.put<uint32_t>(kMagic);
  sink.put<uint32_t>(kVersion);
  sink.put<uint64_t>(tensors_.size());
  sink.put<uint64_t>(metadata_.size() + (write_alignment ? 1 : 0));

  if (write_alignment) {
    sink.put_string(kAlignmentKey);
    sink.put<uint32_t>(static_cast<uint32_t>(GgufValueType::UINT32));
    sink.put<uint32_t>(alignment_);
  }
  for (const auto& [key, value] : metadata_) {
    sink.put_string(key);
    sink.put<uint32_t>(static_cast<uint32_t>(value.type));
    sink.put_value(value);
  }

  // Tensor infos; each tensor's data starts at the running sum of the padded sizes before it.
  uint64_t offset = 0;
  for (const PendingTensor& tensor : tensors_) {
    sink.put_string(tensor.name);
    sink.put<uint32_t>(static_cast<uint32_t>(tensor.dims.size()));
    for (const uint64_t dim : tensor.dims) sink.put<uint64_t>(dim);
    sink.put<uint32_t>(static_cast<uint32_t>(tensor.type));
    sink.put<uint64_t>(offset);
    offset += align_up(tensor.data.size(), alignment_);
  }
  sink.pad_to(alignment_);

  for (const PendingTensor& tensor : tensors_) {
    sink.put_bytes(tensor.data.data(), tensor.data.size());
    sink.pad_to(alignment_);
  }
  return sink.take();
}

void GgufWriter::write(const std::filesystem::path& path) const {
  const std::vector<std::byte> bytes = to_bytes();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path.string() + ": cannot open for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

}  // namespace kvshrink::engine
