#include "engine/tokenizer/code_point_class.h"

#include <unicode/uchar.h>

namespace kvshrink::engine {
namespace {

// CJK Unified Ideographs Extension I (Unicode 15.1): letters in llama.cpp's tables, unassigned in
// ICU 72 (Unicode 15.0), the ICU of Debian 12. The only class difference over all code points.
bool is_cjk_extension_i(char32_t code_point) {
  return code_point >= 0x2EBF0 && code_point <= 0x2EE5D;
}

}  // namespace

CodePointClass classify_code_point(char32_t code_point) {
  const auto c = static_cast<UChar32>(code_point);
  const uint32_t category_mask = U_GET_GC_MASK(c);
  if ((category_mask & U_GC_L_MASK) || is_cjk_extension_i(code_point)) return CodePointClass::kLetter;
  if (category_mask & U_GC_N_MASK) return CodePointClass::kNumber;
  if (u_hasBinaryProperty(c, UCHAR_WHITE_SPACE)) return CodePointClass::kWhitespace;
  return CodePointClass::kOther;
}

}  // namespace kvshrink::engine
