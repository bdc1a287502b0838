#!/usr/bin/env bash
# Real kernel ESP end to end: tests/e2e/dataplane_e2e_test.sh (a controller,
# two agents in gateway namespaces with LAN namespaces behind them, one
# tunnel; ping and an iperf3 TCP stream across CHILD SA rekeys, the agents'
# counters checked) with --dataplane=xfrm, inside a VM that boots Debian's
# kernel (tools/vm/run_in_vm.sh), so the kernel's ESP carries the traffic.
# With xfrm the e2e script also checks the kernel's own counters: `ip -s
# xfrm monitor` and `ip -s xfrm state` in both gateways must have counted
# the pings and every byte iperf3 received, on the same SPIs at both ends,
# and the agents must report dataplane "xfrm". Needs root and the VM kernel
# cache (tools/vm/setup.sh).
set -euo pipefail

if [[ ${1:-} != --inside-vm ]]; then
  exec tools/vm/run_in_vm.sh --timeout 600 -- "$0" --inside-vm
fi
echo "agent_xfrm_test: in a VM on kernel $(uname -r)"
# Unix sockets cannot be made on the VM's 9p root, nor can iperf3 use its
# unlinked temporary files there: both go to the VM's own /run.
export STRAIT_E2E_TMP=/run
export TMPDIR=/run
tests/e2e/dataplane_e2e_test.sh --dataplane=xfrm
