#!/usr/bin/env bash
# The kernel XFRM backend against real kernel ESP. This machine's kernel has
# no ESP, so the test boots Debian's own kernel in a VM
# (tools/vm/run_in_vm.sh) and runs there, as root:
#   - dataplane/xfrm_kernel_esp_test with STRAIT_KERNEL_HAS_ESP=1: SAs of
#     every algorithm read back, updated and deleted; soft and hard expire
#     events; ping, ping6 and TCP forwarded through ESP and ESP-in-UDP
#     between network namespaces, counted by GetCounters and `ip -s xfrm
#     state`;
#   - the kernel SA tests of dataplane/xfrm_dataplane_test, which take
#     their ESP branch on this kernel (install, list, count, delete), and
#     its acquire from real traffic. Its policy tests pass on the host's
#     kernel already.
# One VM boot for both. About a minute on a busy 2-core machine.
set -euo pipefail

if [[ ${1:-} != --inside-vm ]]; then
  exec tools/vm/run_in_vm.sh --timeout 600 -- "$0" --inside-vm
fi

echo "kernel_esp_test: in a VM on kernel $(uname -r)"
export STRAIT_KERNEL_HAS_ESP=1
rc=0
run() {
  echo "kernel_esp_test: $*"
  local start=$SECONDS
  "$@" || rc=1
  echo "kernel_esp_test: $1 took $((SECONDS - start)) s"
}
run dataplane/xfrm_kernel_esp_test
log=/run/xfrm_dataplane_test.log
run dataplane/xfrm_dataplane_test \
  --gtest_filter='KernelTest.EspSaAgainstThisKernel:KernelTest.AcquireFromRealTraffic' \
  > >(tee "$log")
wait $! # tee
# Its SA test passes on kernels without ESP too: it must have found ESP.
if [[ $(grep -c "on this kernel: OK" "$log") -ne 2 ]]; then
  echo "kernel_esp_test: xfrm_dataplane_test did not install its SAs" >&2
  rc=1
fi
((rc == 0)) && echo "kernel_esp_test: kernel ESP works as the XFRM backend expects"
exit "$rc"
