#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds everything, runs every test (unit, end-to-end, crash,
# benchmark smoke). Tests tagged "local" need root for namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/vm/setup.sh >/dev/null # the VM kernel for //tests/vm:kernel_esp_test
tools/check_format.sh
bazel build //...
bazel test //... "$@"
