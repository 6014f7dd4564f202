#include "engine/gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <concepts>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>
#include <utility>

#include "engine/gguf/byte_cursor.h"

namespace kvshrink::engine {

// The whole file, mapped read-only (MAP_PRIVATE); unmapped on destruction. An empty file has no
// mapping.
struct GgufFile::Mapping {
  explicit Mapping(const std::filesystem::path& path);
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (address != nullptr) munmap(address, size);
  }

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(address), size}; }

  void* address = nullptr;
  size_t size = 0;
};

GgufFile::Mapping::Mapping(const std::filesystem::path& path) {
  const auto system_error = [&](const char* what) {
    return GgufError(path.string() + ": " + what + ": " + std::strerror(errno));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw system_error("cannot open");
  struct stat status {};
  if (fstat(fd, &status) != 0) {
    const GgufError error = system_error("cannot stat");
    ::close(fd);
    throw error;
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    throw GgufError(path.string() + ": not a regular file");
  }
  if (status.st_size > 0) {
    void* mapped = mmap(nullptr, static_cast<size_t>(status.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      const GgufError error = system_error("cannot mmap");
      ::close(fd);
      throw error;
    }
    address = mapped;
    size = static_cast<size_t>(status.st_size);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
}

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
constexpr size_t kMaxTensorNameBytes = 63;  // ggml's GGML_MAX_NAME (64) includes the terminating NUL
// Smallest possible records, used to reject impossible counts before allocating anything.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                  // empty key, value type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, one dim, type, offset

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

// Parses the header, metadata and tensor infos of a mapped file and validates the tensor layout.
class GgufParser {
 public:
  GgufParser(const std::filesystem::path& path, std::span<const std::byte> file)
      : path_(path.string()), file_(file), cursor_(file) {}

  void parse() {
    try {
      read_header();
      read_metadata();
      read_alignment();
      read_tensor_infos();
      check_tensor_data();
    } catch (const TruncatedInput& e) {
      fail(e.what());
    }
  }

  uint32_t version = 0;
  uint64_t alignment = kDefaultAlignment;
  std::map<std::string, GgufValue, std::less<>> metadata;
  std::vector<GgufTensorInfo> tensors;
  uint64_t data_start = 0;

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw GgufError(path_ + ": " + where_ + ": " + what);
  }

  void read_header() {
    where_ = "header";
    const auto magic = cursor_.read<uint32_t>();
    if (magic != kMagic) fail("bad magic " + hex(magic) + " (not a GGUF file)");
    version = cursor_.read<uint32_t>();
    if (version == 1) fail("GGUF version 1 is not supported (only versions 2 and 3)");
    if (version != 0 && (version & 0xFFFFu) == 0) {
      fail("big-endian GGUF file (version reads as " + hex(version) +
           "); only little-endian files are supported");
    }
    if (version != 2 && version != 3) fail("unsupported GGUF version " + std::to_string(version));
    tensor_count_ = cursor_.read<uint64_t>();
    kv_count_ = cursor_.read<uint64_t>();
  }

  void read_metadata() {
    check_count("kv_count", kv_count_, kMinKvBytes);
    for (uint64_t i = 0; i < kv_count_; ++i) {
      where_ = "kv " + std::to_string(i);
      std::string key = read_string();
      where_ = "key " + in_quotes(key);
      const auto type_id = cursor_.read<uint32_t>();
      GgufValue value = read_value(type_id);
      if (!metadata.emplace(std::move(key), std::move(value)).second) fail("duplicate key");
    }
  }

  void read_alignment() {
    const auto found = metadata.find("general.alignment");
    if (found == metadata.end()) return;
    where_ = "key 'general.alignment'";
    const GgufValue& value = found->second;
    if (value.type != GgufValueType::UINT32) {
      fail(std::string("type ") + gguf_value_type_name(value.type) + ", expected UINT32");
    }
    alignment = std::get<uint32_t>(value.data);
    if (alignment < 8 || !std::has_single_bit(alignment)) {
      fail("alignment " + std::to_string(alignment) + " is not a power of two and a multiple of 8");
    }
  }

  void read_tensor_infos() {
    check_count("tensor_count", tensor_count_, kMinTensorInfoBytes);
    tensors.reserve(tensor_count_);
    std::unordered_set<std::string_view> names;  // views into the mapping
    for (uint64_t i = 0; i < tensor_count_; ++i) {
      where_ = "tensor info " + std::to_string(i);
      const std::string_view name = cursor_.read_bytes(cursor_.read<uint64_t>());
      if (name.size() > kMaxTensorNameBytes) {
        fail("name is " + std::to_string(name.size()) + " bytes, more than " +
             std::to_string(kMaxTensorNameBytes));
      }
      where_ = "tensor " + in_quotes(name);
      if (!names.insert(name).second) fail("duplicate tensor name");
      tensors.push_back(read_tensor_info(std::string(name)));
    }
    data_start = align_up(cursor_.position(), alignment);
  }

  GgufTensorInfo read_tensor_info(std::string name) {
    GgufTensorInfo info{std::move(name), {}, kernels::TensorType::F32, 0, 0, 0};
    const auto n_dims = cursor_.read<uint32_t>();
    if (n_dims < 1 || n_dims > kMaxDims) fail("n_dims " + std::to_string(n_dims) + " is out of range 1..4");
    info.n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = cursor_.read<uint64_t>();
      if (dim == 0) fail("dimension " + std::to_string(d) + " is zero");
      if (__builtin_mul_overflow(info.n_elements, dim, &info.n_elements)) {
        fail("element count overflows 64 bits at dimension " + std::to_string(d));
      }
      info.dims.push_back(dim);
    }
    const auto type_id = cursor_.read<uint32_t>();
    const std::optional<kernels::TensorTypeInfo> type = kernels::tensor_type_info(type_id);
    if (!type) fail("unknown or unsupported tensor type " + std::to_string(type_id));
    info.type = type->type;
    if (info.dims[0] % type->block_elements != 0) {
      fail("row length " + std::to_string(info.dims[0]) + " is not a multiple of the " +
           std::string(type->name) + " block size " + std::to_string(type->block_elements));
    }
    const uint64_t blocks = info.n_elements / type->block_elements;
    if (__builtin_mul_overflow(blocks, type->block_bytes, &info.n_bytes)) fail("byte size overflows 64 bits");
    info.offset = cursor_.read<uint64_t>();
    if (info.offset % alignment != 0) {
      fail("offset " + std::to_string(info.offset) + " not aligned to " + std::to_string(alignment));
    }
    return info;
  }

  // Every tensor lies inside the data section and no two tensors share a byte.
  void check_tensor_data() {
    const uint64_t data_size = file_.size() > data_start ? file_.size() - data_start : 0;
    for (const GgufTensorInfo& tensor : tensors) {
      where_ = "tensor " + in_quotes(tensor.name);
      if (tensor.offset > data_size || tensor.n_bytes > data_size - tensor.offset) {
        fail("data at offset " + std::to_string(tensor.offset) + " (" + std::to_string(tensor.n_bytes) +
             " bytes) extends past the end of the file (data section is " + std::to_string(data_size) +
             " bytes)");
      }
    }
    std::vector<const GgufTensorInfo*> by_offset;
    by_offset.reserve(tensors.size());
    for (const GgufTensorInfo& tensor : tensors) by_offset.push_back(&tensor);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const GgufTensorInfo& previous = *by_offset[i - 1];
      const GgufTensorInfo& current = *by_offset[i];
      if (previous.offset + previous.n_bytes > current.offset) {  // no overflow: both end inside the file
        where_ = "tensor " + in_quotes(current.name);
        fail("data at offset " + std::to_string(current.offset) + " overlaps tensor " +
             in_quotes(previous.name));
      }
    }
  }

  // A count of records each at least min_record_bytes long must fit in the bytes left.
  void check_count(const char* what, uint64_t count, uint64_t min_record_bytes) {
    if (count > cursor_.remaining() / min_record_bytes) {
      where_ = "header";
      fail(std::string(what) + " " + std::to_string(count) + " is impossible: only " +
           std::to_string(cursor_.remaining()) + " bytes are left at offset " +
           std::to_string(cursor_.position()));
    }
  }

  std::string read_string() { return std::string(cursor_.read_bytes(cursor_.read<uint64_t>())); }

  bool read_bool() {
    const auto byte = cursor_.read<uint8_t>();
    if (byte > 1) fail("bool value " + std::to_string(byte) + " is not 0 or 1");
    return byte == 1;
  }

  GgufValue read_value(uint32_t type_id) {
    switch (type_id) {
      case 0:
        return {GgufValueType::UINT8, cursor_.read<uint8_t>()};
      case 1:
        return {GgufValueType::INT8, cursor_.read<int8_t>()};
      case 2:
        return {GgufValueType::UINT16, cursor_.read<uint16_t>()};
      case 3:
        return {GgufValueType::INT16, cursor_.read<int16_t>()};
      case 4:
        return {GgufValueType::UINT32, cursor_.read<uint32_t>()};
      case 5:
        return {GgufValueType::INT32, cursor_.read<int32_t>()};
      case 6:
        return {GgufValueType::FLOAT32, cursor_.read<float>()};
      case 7:
        return {GgufValueType::BOOL, read_bool()};
      case 8:
        return {GgufValueType::STRING, read_string()};
      case 9:
        return {GgufValueType::ARRAY, read_array()};
      case 10:
        return {GgufValueType::UINT64, cursor_.read<uint64_t>()};
      case 11:
        return {GgufValueType::INT64, cursor_.read<int64_t>()};
      case 12:
        return {GgufValueType::FLOAT64, cursor_.read<double>()};
    }
    fail("unknown value type " + std::to_string(type_id));
  }

  // u32 element type, u64 count, then the elements back to back.
  GgufArray read_array() {
    const auto type_id = cursor_.read<uint32_t>();
    if (type_id == static_cast<uint32_t>(GgufValueType::ARRAY)) fail("nested arrays are not supported");
    if (type_id > static_cast<uint32_t>(GgufValueType::FLOAT64)) {
      fail("unknown array element type " + std::to_string(type_id));
    }
    const auto element_type = static_cast<GgufValueType>(type_id);
    const uint64_t count = cursor_.read<uint64_t>();
    switch (element_type) {
      case GgufValueType::UINT8:
        return {element_type, read_scalars<uint8_t>(count)};
      case GgufValueType::INT8:
        return {element_type, read_scalars<int8_t>(count)};
      case GgufValueType::UINT16:
        return {element_type, read_scalars<uint16_t>(count)};
      case GgufValueType::INT16:
        return {element_type, read_scalars<int16_t>(count)};
      case GgufValueType::UINT32:
        return {element_type, read_scalars<uint32_t>(count)};
      case GgufValueType::INT32:
        return {element_type, read_scalars<int32_t>(count)};
      case GgufValueType::FLOAT32:
        return {element_type, read_scalars<float>(count)};
      case GgufValueType::UINT64:
        return {element_type, read_scalars<uint64_t>(count)};
      case GgufValueType::INT64:
        return {element_type, read_scalars<int64_t>(count)};
      case GgufValueType::FLOAT64:
        return {element_type, read_scalars<double>(count)};
      case GgufValueType::BOOL: {
        check_array_count(count, 1);
        std::vector<bool> values(count);
        for (uint64_t i = 0; i < count; ++i) values[i] = read_bool();
        return {element_type, std::move(values)};
      }
      case GgufValueType::STRING: {
        check_array_count(count, 8);  // each string has at least its u64 length
        std::vector<std::string> values;
        values.reserve(count);
        for (uint64_t i = 0; i < count; ++i) values.push_back(read_string());
        return {element_type, std::move(values)};
      }
      case GgufValueType::ARRAY:
        break;  // rejected above
    }
    fail("unknown array element type " + std::to_string(type_id));
  }

  template <typename T>
  std::vector<T> read_scalars(uint64_t count) {
    check_array_count(count, sizeof(T));
    std::vector<T> values(count);
    const std::string_view bytes = cursor_.read_bytes(count * sizeof(T));
    if (count > 0) std::memcpy(values.data(), bytes.data(), bytes.size());
    return values;
  }

  void check_array_count(uint64_t count, uint64_t min_element_bytes) {
    if (count > cursor_.remaining() / min_element_bytes) {
      fail("array count " + std::to_string(count) + " is impossible: only " +
           std::to_string(cursor_.remaining()) + " bytes are left at offset " +
           std::to_string(cursor_.position()));
    }
  }

  static uint64_t align_up(uint64_t x, uint64_t alignment) {
    return x + (alignment - x % alignment) % alignment;
  }

  static std::string hex(uint32_t x) {
    static const char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) s += digits[(x >> shift) & 0xF];
    return s;
  }

  std::string path_;
  std::span<const std::byte> file_;
  ByteCursor cursor_;
  std::string where_;  // the record being read, for error messages
  uint64_t tensor_count_ = 0;
  uint64_t kv_count_ = 0;
};

}  // namespace

GgufFile GgufFile::open(const std::filesystem::path& path) {
  auto mapping = std::make_unique<Mapping>(path);
  GgufParser parser(path, mapping->bytes());
  parser.parse();
  GgufFile file;
  file.path_ = path;
  file.version_ = parser.version;
  file.alignment_ = parser.alignment;
  file.metadata_ = std::move(parser.metadata);
  file.tensors_ = std::move(parser.tensors);
  file.data_start_ = parser.data_start;
  file.mapping_ = std::move(mapping);
  return file;
}

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

// ---- metadata ----

namespace {

template <typename T>
concept GgufInteger = std::integral<T> && !std::same_as<T, bool>;

}  // namespace

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto found = metadata_.find(key);
  return found == metadata_.end() ? nullptr : &found->second;
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* value = find(key);
  if (value == nullptr) throw GgufError(path_.string() + ": missing key " + in_quotes(key));
  return *value;
}

GgufError GgufFile::wrong_type(std::string_view key, const GgufValue& value,
                               std::string_view expected) const {
  std::string type = gguf_value_type_name(value.type);
  if (value.type == GgufValueType::ARRAY) {
    type += std::string(" of ") + gguf_value_type_name(std::get<GgufArray>(value.data).element_type);
  }
  return GgufError(path_.string() + ": key " + in_quotes(key) + " has type " + type + ", expected " +
                   std::string(expected));
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type != GgufValueType::STRING) throw wrong_type(key, value, "STRING");
  return std::get<std::string>(value.data);
}

std::optional<std::string> GgufFile::find_string(std::string_view key) const {
  if (find(key) == nullptr) return std::nullopt;
  return get_string(key);
}

uint64_t GgufFile::get_uint(std::string_view key) const {
  const GgufValue& value = require(key);
  return std::visit(
      [&](const auto& x) -> uint64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (GgufInteger<T>) {
          if (x < 0) {
            throw GgufError(path_.string() + ": key " + in_quotes(key) + " is negative (" +
                            std::to_string(x) + ")");
          }
          return static_cast<uint64_t>(x);
        } else {
          throw wrong_type(key, value, "an unsigned integer");
        }
      },
      value.data);
}

std::optional<uint64_t> GgufFile::find_uint(std::string_view key) const {
  if (find(key) == nullptr) return std::nullopt;
  return get_uint(key);
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type == GgufValueType::FLOAT32) return std::get<float>(value.data);
  if (value.type == GgufValueType::FLOAT64) return std::get<double>(value.data);
  throw wrong_type(key, value, "FLOAT32 or FLOAT64");
}

std::optional<double> GgufFile::find_float(std::string_view key) const {
  if (find(key) == nullptr) return std::nullopt;
  return get_float(key);
}

std::optional<bool> GgufFile::find_bool(std::string_view key) const {
  const GgufValue* value = find(key);
  if (value == nullptr) return std::nullopt;
  if (value->type != GgufValueType::BOOL) throw wrong_type(key, *value, "BOOL");
  return std::get<bool>(value->data);
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type != GgufValueType::ARRAY ||
      std::get<GgufArray>(value.data).element_type != GgufValueType::STRING) {
    throw wrong_type(key, value, "ARRAY of STRING");
  }
  return std::get<std::vector<std::string>>(std::get<GgufArray>(value.data).elements);
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue& value = require(key);
  if (value.type != GgufValueType::ARRAY) throw wrong_type(key, value, "ARRAY of integers");
  return std::visit(
      [&](const auto& elements) -> std::vector<int64_t> {
        using T = typename std::decay_t<decltype(elements)>::value_type;
        if constexpr (GgufInteger<T>) {
          std::vector<int64_t> result;
          result.reserve(elements.size());
          for (const T x : elements) {
            if constexpr (std::same_as<T, uint64_t>) {
              if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                throw GgufError(path_.string() + ": key " + in_quotes(key) + " has element " +
                                std::to_string(x) + " beyond the int64 range");
              }
            }
            result.push_back(static_cast<int64_t>(x));
          }
          return result;
        } else {
          throw wrong_type(key, value, "ARRAY of integers");
        }
      },
      std::get<GgufArray>(value.data).elements);
}

// ---- tensors ----

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const GgufTensorInfo& tensor : tensors_) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

const GgufTensorInfo& GgufFile::get_tensor(std::string_view name) const {
  const GgufTensorInfo* tensor = find_tensor(name);
  if (tensor == nullptr) throw GgufError(path_.string() + ": missing tensor " + in_quotes(name));
  return *tensor;
}

std::span<const std::byte> GgufFile::tensor_data(const GgufTensorInfo& tensor) const {
  return mapping_->bytes().subspan(data_start_ + tensor.offset, tensor.n_bytes);
}

}  // namespace kvshrink::engine
