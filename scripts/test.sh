#!/usr/bin/env bash
# Quick start, part 2: install, build, and run the whole test suite: the GGUF hardening tests
# under AddressSanitizer + UBSan, then every test in CTest (unit, MPI with np 1/2/3, end to end
# on the real model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKVSHRINK_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$(nproc)" --target gguf_corrupt_test gguf_roundtrip_test dequantize_test
for test in gguf_corrupt_test gguf_roundtrip_test dequantize_test; do
  echo "== $test under ASan + UBSan"
  build-asan/tests/$test --gtest_brief=1
done

ctest --test-dir build --output-on-failure -j 2
