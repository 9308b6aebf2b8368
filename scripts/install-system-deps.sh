#!/usr/bin/env bash
# Debian packages the tests need beyond the Rust and Python toolchains: headless Chromium and its
# WebDriver (the labeling app's browser tests) and PostgreSQL (the labeling database on
# PostgreSQL). Idempotent: installs only what is missing; needs root or sudo for apt-get.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v runuser >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "[setup] installing ${missing[*]} (apt-get)" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >&2 || true
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
