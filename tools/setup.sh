#!/usr/bin/env bash
# Installs everything Strait needs to build, run and test on Debian 12, from
# Debian's archive only. Idempotent: packages already present are skipped.
set -euo pipefail

packages=(
  # build
  bazel-bootstrap g++ pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev prometheus-cpp-dev libmnl-dev
  libgtest-dev libgmock-dev libsqlite3-dev libyaml-cpp-dev
  # run and test
  iproute2 curl procps python3 clang-format jq openssl iputils-ping iperf3
  # interop tests against strongSwan (tests/interop/); the standard plugins
  # bring openssl and gcm, which AES-GCM and ECP groups need
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins
  # kernel ESP tests in a VM on Debian's own kernel (tools/vm/)
  qemu-system-x86 busybox-static cpio kmod
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]}; run as root (or with sudo)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: all packages present" >&2
