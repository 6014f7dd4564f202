// Tokenizer pieces on hand-derived examples: byte-level alphabet, UTF-8 helpers, pre-tokenizer
// splits, BPE merge order, special-token splitting, decoding, streaming and the chat template.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tokenizer/bpe_merges.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace kvshrink::engine {
namespace {

using Words = std::vector<std::string>;

// ---- byte-level alphabet -------------------------------------------------------------------------

TEST(ByteLevel, PrintableBytesMapToThemselves) {
  EXPECT_EQ(byte_to_code_point('!'), U'!');
  EXPECT_EQ(byte_to_code_point('~'), U'~');
  EXPECT_EQ(byte_to_code_point(0xA1), U'\u00A1');
  EXPECT_EQ(byte_to_code_point(0xAE), U'\u00AE');
  EXPECT_EQ(byte_to_code_point(0xFF), U'\u00FF');
}

TEST(ByteLevel, OtherBytesShiftToU0100InOrder) {
  EXPECT_EQ(byte_to_code_point(0x00), U'\u0100');
  EXPECT_EQ(byte_to_code_point('\t'), U'\u0109');
  EXPECT_EQ(byte_to_code_point('\n'), U'\u010A');
  EXPECT_EQ(byte_to_code_point(' '), U'\u0120');
  EXPECT_EQ(byte_to_code_point(0x7F), U'\u0121');
  EXPECT_EQ(byte_to_code_point(0xA0), U'\u0142');
  EXPECT_EQ(byte_to_code_point(0xAD), U'\u0143');
}

TEST(ByteLevel, EveryByteRoundTrips) {
  for (int byte = 0; byte < 256; ++byte) {
    const auto back = code_point_to_byte(byte_to_code_point(static_cast<uint8_t>(byte)));
    ASSERT_TRUE(back.has_value()) << byte;
    EXPECT_EQ(*back, byte);
  }
  EXPECT_FALSE(code_point_to_byte(U'\u0144').has_value());
  EXPECT_FALSE(code_point_to_byte(U' ').has_value());
}

TEST(ByteLevel, EncodesAndDecodesText) {
  EXPECT_EQ(encode_byte_level(" the\n"), "\u0120the\u010A");
  EXPECT_EQ(encode_byte_level("\xC3\xA9"), "\u00C3\u00A9");  // "é" as its two bytes
  EXPECT_EQ(decode_byte_level("\u0120the\u010A"), " the\n");
  EXPECT_EQ(decode_byte_level("\u00C3\u00A9"), "\xC3\xA9");
}

// ---- UTF-8 ----------------------------------------------------------------------------------------

TEST(Utf8, LenientDecodeReplacesEachBadByte) {
  EXPECT_EQ(utf8::decode_lenient("a\xC3\xA9"), U"a\u00E9");
  EXPECT_EQ(utf8::decode_lenient("\xF0\x9F\x8D\x95"), U"\U0001F355");
  EXPECT_EQ(utf8::decode_lenient("caf\xC3"), U"caf\uFFFD");
  EXPECT_EQ(utf8::decode_lenient("\xE2\x82x"), U"\uFFFD\uFFFDx");
  EXPECT_EQ(utf8::decode_lenient("\xFF\x80"), U"\uFFFD\uFFFD");
}

TEST(Utf8, EncodeInvertsDecode) {
  const std::string text = "a\u00E9\u4E2D\U0001F355";
  EXPECT_EQ(utf8::encode(utf8::decode_lenient(text)), text);
}

TEST(Utf8, CompletePrefixHoldsBackOnlyAnUnfinishedSequence) {
  EXPECT_EQ(utf8::complete_prefix_length("abc"), 3u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xE2\x82"), 2u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xE2\x82\xAC"), 5u);
  EXPECT_EQ(utf8::complete_prefix_length("\xF0\x9F\x8D"), 0u);
  EXPECT_EQ(utf8::complete_prefix_length("a\xFF"), 2u);  // never valid: nothing to wait for
  EXPECT_EQ(utf8::complete_prefix_length(""), 0u);
}

TEST(Utf8, ReplaceInvalidIsStrict) {
  EXPECT_EQ(utf8::replace_invalid("ok \u00E9"), "ok \u00E9");
  EXPECT_EQ(utf8::replace_invalid("a\xFF"), "a\uFFFD");
  EXPECT_EQ(utf8::replace_invalid("\xC0\x80"), "\uFFFD\uFFFD");            // overlong
  EXPECT_EQ(utf8::replace_invalid("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // surrogate
}

// ---- pre-tokenizers ---------------------------------------------------------------------------------

TEST(PreTokenizeSmollm, WhitespaceRunLeavesLastSpaceToNextWord) {
  EXPECT_EQ(pre_tokenize("a  b", PreTokenizer::kSmollm), (Words{"a", " ", " b"}));
  EXPECT_EQ(pre_tokenize("hello world  ", PreTokenizer::kSmollm), (Words{"hello", " world", "  "}));
  EXPECT_EQ(pre_tokenize("a\n\nb", PreTokenizer::kSmollm), (Words{"a", "\n", "\n", "b"}));
  EXPECT_EQ(pre_tokenize("\t\tx", PreTokenizer::kSmollm), (Words{"\t", "\t", "x"}));
}

TEST(PreTokenizeSmollm, DigitsAreSingle) {
  EXPECT_EQ(pre_tokenize(" 123", PreTokenizer::kSmollm), (Words{" ", "1", "2", "3"}));
  EXPECT_EQ(pre_tokenize("x3.14", PreTokenizer::kSmollm), (Words{"x", "3", ".", "1", "4"}));
}

TEST(PreTokenizeSmollm, ContractionsAreCaseSensitive) {
  EXPECT_EQ(pre_tokenize("I'm don't", PreTokenizer::kSmollm), (Words{"I", "'m", " don", "'t"}));
  EXPECT_EQ(pre_tokenize("THEY'RE", PreTokenizer::kSmollm), (Words{"THEY", "'", "RE"}));
}

TEST(PreTokenizeSmollm, PunctuationAndScripts) {
  EXPECT_EQ(pre_tokenize("Hi!!! ok", PreTokenizer::kSmollm), (Words{"Hi", "!!!", " ok"}));
  EXPECT_EQ(pre_tokenize("\u4F60\u597D \u4E16\u754C", PreTokenizer::kSmollm),
            (Words{"\u4F60\u597D", " \u4E16\u754C"}));
  EXPECT_EQ(pre_tokenize("caf\u00E9 \U0001F355!", PreTokenizer::kSmollm),
            (Words{"caf\u00E9", " \U0001F355!"}));
  EXPECT_EQ(pre_tokenize("", PreTokenizer::kSmollm), Words{});
}

TEST(PreTokenizeGpt2, NumbersStayTogether) {
  EXPECT_EQ(pre_tokenize(" 123", PreTokenizer::kGpt2), (Words{" 123"}));
  EXPECT_EQ(pre_tokenize("abc123 x", PreTokenizer::kGpt2), (Words{"abc", "123", " x"}));
}

TEST(PreTokenizeLlamaBpe, DigitsInGroupsOfThree) {
  EXPECT_EQ(pre_tokenize(" 12345", PreTokenizer::kLlamaBpe), (Words{" ", "123", "45"}));
  EXPECT_EQ(pre_tokenize("abc1234567", PreTokenizer::kLlamaBpe), (Words{"abc", "123", "456", "7"}));
}

TEST(PreTokenizeLlamaBpe, ContractionsAreCaseInsensitive) {
  EXPECT_EQ(pre_tokenize("I'M THEY'RE", PreTokenizer::kLlamaBpe), (Words{"I", "'M", " THEY", "'RE"}));
}

TEST(PreTokenizeLlamaBpe, WhitespaceAndNewlines) {
  EXPECT_EQ(pre_tokenize("a  b", PreTokenizer::kLlamaBpe), (Words{"a", " ", " b"}));
  EXPECT_EQ(pre_tokenize("hello\n\nworld", PreTokenizer::kLlamaBpe), (Words{"hello", "\n\n", "world"}));
  EXPECT_EQ(pre_tokenize("foo!!\n\nbar", PreTokenizer::kLlamaBpe), (Words{"foo", "!!\n\n", "bar"}));
  EXPECT_EQ(pre_tokenize("\tfoo", PreTokenizer::kLlamaBpe), (Words{"\tfoo"}));
  EXPECT_EQ(pre_tokenize("x \n  y", PreTokenizer::kLlamaBpe), (Words{"x", " \n", " ", " y"}));
}

TEST(PreTokenizeQwen2, DigitsAreSingle) {
  EXPECT_EQ(pre_tokenize(" 123", PreTokenizer::kQwen2), (Words{" ", "1", "2", "3"}));
  EXPECT_EQ(pre_tokenize("abc12", PreTokenizer::kQwen2), (Words{"abc", "1", "2"}));
  EXPECT_EQ(pre_tokenize("I'LL", PreTokenizer::kQwen2), (Words{"I", "'LL"}));
}

// ---- BPE merges ---------------------------------------------------------------------------------

using Symbols = std::vector<std::string_view>;

TEST(BpeMerges, LowestRankMergesFirst) {
  EXPECT_EQ(BpeMerges({"b c", "a b"}).apply("abc"), (Symbols{"a", "bc"}));
  EXPECT_EQ(BpeMerges({"a b", "b c"}).apply("abc"), (Symbols{"ab", "c"}));
}

TEST(BpeMerges, LeftmostWinsTies) {
  EXPECT_EQ(BpeMerges({"a a"}).apply("aaa"), (Symbols{"aa", "a"}));
  EXPECT_EQ(BpeMerges({"a a", "aa aa"}).apply("aaaaa"), (Symbols{"aaaa", "a"}));
}

TEST(BpeMerges, MergesChainAndKeepMultiByteCharacters) {
  const BpeMerges merges({"\u0120 w", "o r", "\u0120w or"});
  EXPECT_EQ(merges.apply("\u0120wor"), (Symbols{"\u0120wor"}));
  EXPECT_EQ(merges.apply("\u0120wxr"), (Symbols{"\u0120w", "x", "r"}));
  EXPECT_EQ(merges.apply(""), Symbols{});
}

TEST(BpeMerges, RejectsMalformedMerge) {
  EXPECT_THROW(BpeMerges({"ab"}), std::invalid_argument);
}

// ---- tokenizer on a tiny byte-level vocab ---------------------------------------------------------------

// ids 0-3 specials, 4 + b for byte b, then the merged tokens.
constexpr TokenId kEndOfText = 0, kImStart = 1, kImEnd = 2, kToolTag = 3;
TokenId byte_id(uint8_t byte) {
  return 4 + byte;
}

TokenizerVocab tiny_vocab(PreTokenizer pre_tokenizer = PreTokenizer::kSmollm) {
  TokenizerVocab vocab;
  auto add = [&](std::string text, TokenKind kind) {
    vocab.tokens.push_back(std::move(text));
    vocab.kinds.push_back(kind);
  };
  add("<|endoftext|>", TokenKind::kControl);
  add("<|im_start|>", TokenKind::kControl);
  add("<|im_end|>", TokenKind::kControl);
  add("<tool>", TokenKind::kUserDefined);
  for (int byte = 0; byte < 256; ++byte)
    add(encode_byte_level(std::string(1, static_cast<char>(byte))), TokenKind::kNormal);
  vocab.merges = {"h e", "l l",        "he ll",       "hell o",      "\u0120 w",
                  "o r", "\u0120w or", "\u0120wor l", "\u0120worl d"};
  for (const char* merged :
       {"he", "ll", "hell", "hello", "\u0120w", "or", "\u0120wor", "\u0120worl", "\u0120world"}) {
    add(merged, TokenKind::kNormal);
  }
  vocab.pre_tokenizer = pre_tokenizer;
  vocab.bos_id = kImStart;
  vocab.eos_id = kImEnd;
  return vocab;
}

constexpr TokenId kHello = 4 + 256 + 3;
constexpr TokenId kSpaceWorld = 4 + 256 + 8;

TEST(Tokenizer, EncodesWordsThroughMerges) {
  const Tokenizer tokenizer(tiny_vocab());
  EXPECT_EQ(tokenizer.encode("hello world"), (std::vector<TokenId>{kHello, kSpaceWorld}));
  EXPECT_EQ(tokenizer.encode("hex"), (std::vector<TokenId>{4 + 256 + 0, byte_id('x')}));
  EXPECT_EQ(tokenizer.encode("\xC3\xA9"), (std::vector<TokenId>{byte_id(0xC3), byte_id(0xA9)}));
  EXPECT_EQ(tokenizer.encode(""), std::vector<TokenId>{});
}

TEST(Tokenizer, InvalidUtf8BecomesReplacementCharacter) {
  const Tokenizer tokenizer(tiny_vocab());
  EXPECT_EQ(tokenizer.encode("\xFF"), (std::vector<TokenId>{byte_id(0xEF), byte_id(0xBF), byte_id(0xBD)}));
}

TEST(Tokenizer, SplitsSpecialTokensFirst) {
  const Tokenizer tokenizer(tiny_vocab());
  EXPECT_EQ(tokenizer.encode("<|im_start|>hello<|im_end|>"),
            (std::vector<TokenId>{kImStart, kHello, kImEnd}));
  EXPECT_EQ(tokenizer.encode("hello<tool> world"), (std::vector<TokenId>{kHello, kToolTag, kSpaceWorld}));
}

TEST(Tokenizer, WithoutParseSpecialOnlyUserDefinedTokensSplit) {
  const Tokenizer tokenizer(tiny_vocab());
  const std::vector<TokenId> ids = tokenizer.encode("<|im_end|><tool>", /*parse_special=*/false);
  ASSERT_EQ(ids.size(), 11u);
  EXPECT_EQ(ids.front(), byte_id('<'));
  EXPECT_EQ(ids.back(), kToolTag);
}

TEST(Tokenizer, PrependsBosWhenVocabSaysSo) {
  TokenizerVocab vocab = tiny_vocab();
  vocab.add_bos = true;
  const Tokenizer tokenizer(std::move(vocab));
  EXPECT_EQ(tokenizer.encode("hello"), (std::vector<TokenId>{kImStart, kHello}));
  EXPECT_EQ(tokenizer.encode(""), (std::vector<TokenId>{kImStart}));
}

TEST(Tokenizer, LlamaBpeTakesWholeWordTokensWithoutMerging) {
  TokenizerVocab vocab = tiny_vocab(PreTokenizer::kLlamaBpe);
  vocab.tokens.push_back("ab");  // no merge builds "ab"
  vocab.kinds.push_back(TokenKind::kNormal);
  const TokenId ab = static_cast<TokenId>(vocab.tokens.size() - 1);
  EXPECT_EQ(Tokenizer(vocab).encode("ab"), (std::vector<TokenId>{ab}));
  vocab.pre_tokenizer = PreTokenizer::kSmollm;
  EXPECT_EQ(Tokenizer(vocab).encode("ab"), (std::vector<TokenId>{byte_id('a'), byte_id('b')}));
}

TEST(Tokenizer, DecodesBytesAndHidesControlTokens) {
  const Tokenizer tokenizer(tiny_vocab());
  const std::vector<TokenId> ids = {kImStart, kHello, kSpaceWorld, kToolTag, kImEnd};
  EXPECT_EQ(tokenizer.decode(ids), "hello world<tool>");
  EXPECT_EQ(tokenizer.decode(ids, /*render_special=*/true), "<|im_start|>hello world<tool><|im_end|>");
  EXPECT_EQ(tokenizer.token_bytes(byte_id(0xE2)), "\xE2");
  EXPECT_THROW(tokenizer.token_bytes(-1), std::out_of_range);
  EXPECT_THROW(tokenizer.token_bytes(static_cast<TokenId>(tokenizer.vocab_size())), std::out_of_range);
}

TEST(Tokenizer, DecodesByteKindTokens) {
  TokenizerVocab vocab = tiny_vocab();
  vocab.tokens.push_back("<0x41>");
  vocab.kinds.push_back(TokenKind::kByte);
  const Tokenizer tokenizer(vocab);
  EXPECT_EQ(tokenizer.token_bytes(static_cast<TokenId>(tokenizer.vocab_size() - 1)), "A");
  vocab.tokens.back() = "<0xZZ>";
  EXPECT_THROW(Tokenizer{vocab}, std::invalid_argument);
}

TEST(Tokenizer, EndOfGenerationTokens) {
  const Tokenizer tokenizer(tiny_vocab());
  EXPECT_TRUE(tokenizer.is_end_of_generation(kEndOfText));
  EXPECT_TRUE(tokenizer.is_end_of_generation(kImEnd));
  EXPECT_FALSE(tokenizer.is_end_of_generation(kImStart));
  EXPECT_FALSE(tokenizer.is_end_of_generation(kHello));
}

TEST(Tokenizer, RejectsInconsistentVocab) {
  TokenizerVocab vocab = tiny_vocab();
  vocab.kinds.pop_back();
  EXPECT_THROW(Tokenizer{vocab}, std::invalid_argument);
  vocab = tiny_vocab();
  vocab.eos_id = static_cast<TokenId>(vocab.tokens.size());
  EXPECT_THROW(Tokenizer{vocab}, std::invalid_argument);
  vocab = tiny_vocab();
  vocab.bos_id = -1;
  vocab.add_bos = true;
  EXPECT_THROW(Tokenizer{vocab}, std::invalid_argument);
}

// ---- streaming decoder ---------------------------------------------------------------------------

TEST(StreamingDecoder, HoldsBackSplitUtf8) {
  const Tokenizer tokenizer(tiny_vocab());
  StreamingDecoder decoder(tokenizer);
  EXPECT_EQ(decoder.push(kHello), "hello");
  EXPECT_EQ(decoder.push(byte_id(0xE2)), "");  // "€" = E2 82 AC
  EXPECT_EQ(decoder.push(byte_id(0x82)), "");
  EXPECT_EQ(decoder.push(byte_id(0xAC)), "\u20AC");
  EXPECT_EQ(decoder.push(kImEnd), "");
  EXPECT_EQ(decoder.finish(), "");
}

TEST(StreamingDecoder, ReplacesInvalidBytes) {
  const Tokenizer tokenizer(tiny_vocab());
  StreamingDecoder decoder(tokenizer);
  EXPECT_EQ(decoder.push(byte_id(0xFF)), "\uFFFD");
  EXPECT_EQ(decoder.push(byte_id(0xF0)), "");
  EXPECT_EQ(decoder.push(byte_id(0x9F)), "");
  EXPECT_EQ(decoder.push(byte_id('a')), "\uFFFD\uFFFDa");
  EXPECT_EQ(decoder.push(byte_id(0xC3)), "");
  EXPECT_EQ(decoder.finish(), "\uFFFD");
}

// ---- chat template ----------------------------------------------------------------------------------

TEST(ChatTemplate, AddsDefaultSystemTurnAndGenerationPrompt) {
  EXPECT_EQ(
      render_chatml({{"user", "Hi"}}),
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, KeepsGivenSystemTurn) {
  EXPECT_EQ(render_chatml({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}},
                          /*add_generation_prompt=*/false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
}

TEST(ChatTemplate, NoMessages) {
  EXPECT_EQ(render_chatml({}, /*add_generation_prompt=*/false), "");
  EXPECT_EQ(render_chatml({}), "<|im_start|>assistant\n");
}

}  // namespace
}  // namespace kvshrink::engine
