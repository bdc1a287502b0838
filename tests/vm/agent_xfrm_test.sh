#!/usr/bin/env bash
# Real kernel ESP end to end: tests/e2e/dataplane_e2e_test.sh (a controller,
# two agents in gateway namespaces with LAN namespaces behind them, one
# tunnel; ping and an iperf3 TCP stream across CHILD SA rekeys, counters
# checked) with --dataplane=xfrm, inside a VM that boots Debian's kernel
# (tools/vm/run_in_vm.sh), so the kernel's ESP carries the traffic. After
# the stream, `ip -s xfrm state` in a gateway must show ESP SAs with
# traffic. Needs root and the VM kernel cache (tools/vm/setup.sh).
set -euo pipefail

if [[ ${1:-} != --inside-vm ]]; then
  exec tools/vm/run_in_vm.sh --timeout 1200 -- "$0" --inside-vm
fi
echo "agent_xfrm_test: in a VM on kernel $(uname -r)"
export STRAIT_E2E_TMP=/run
tests/e2e/dataplane_e2e_test.sh --dataplane=xfrm
