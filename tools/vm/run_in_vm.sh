#!/usr/bin/env bash
# Runs a command as root inside a throwaway VM that boots Debian's own kernel
# (which has ESP, unlike some hosts') and sees the host's whole file system:
#
#   tools/vm/run_in_vm.sh [options] -- COMMAND [ARG...]
#
# Exits with COMMAND's exit code; 124 when the timeout struck, 125 when the
# VM could not run the command (the console log is printed then, and on any
# failure). COMMAND's output (stdout and stderr together) streams to stdout.
#
# Options:
#   --timeout S    hard limit on the whole run, boot included (default 600)
#   --memory MB    guest memory (default 1024)
#   --cpus N       guest CPUs (default 2)
#   --modules "M…" modules to load before COMMAND, besides the default
#                  ESP/crypto set (see default_modules below)
#   --no-default-modules   load only --modules
#   --keep         keep the run folder (console log, output) and say where
#                  (or STRAIT_VM_KEEP=1)
#
# Inside the VM
#   - qemu-system-x86_64 in software emulation (no KVM needed), q35, 2 CPUs,
#     no network card: traffic stays inside the VM. The kernel reaches /init
#     in about 2.5 s on an idle machine, the command starts about 1 s later;
#     on a busy 2-core machine both take twice as long or more.
#   - The host's / is the VM's / over 9p (read-write, as root), so paths are
#     the same: Bazel runfiles, bazel-bin, /usr/sbin/ip, strongSwan all work.
#     It is cached in the guest (9p cache=loose): do not change files from
#     the host that the guest has read while it runs.
#   - The VM has its own /proc, /sys, /dev (with /dev/pts, /dev/shm) and a
#     tmpfs /run. Unix sockets cannot be made on 9p: put sockets and
#     daemons' runtime files under /run (ip netns, charon's vici socket, a
#     controller's socket, ...). /tmp is the host's. Files cannot be used
#     after being unlinked on 9p either (iperf3 does that in TMPDIR): point
#     TMPDIR at /run for such programs.
#   - COMMAND runs from the caller's working directory with the caller's
#     exported environment, plus STRAIT_IN_VM=1 and STRAIT_VM_KERNEL_ROOT
#     (the kernel package's files: `modprobe -d "$STRAIT_VM_KERNEL_ROOT" M`
#     loads a module by hand); stdin is /dev/null.
#   - The kernel's own module requests (crypto templates, xfrm types,
#     rtnl-link-*) are served from the kernel package's tree.
#   - Crypto self-tests are off (cryptomgr.notests): they cost seconds per
#     algorithm in emulation.
#   - Everything still running when COMMAND exits dies with the VM; files it
#     wrote are synced to the host first.
#
# Works from a Bazel test with tags = ["local"] (root, no sandbox): the run
# folder goes under $TEST_TMPDIR and the whole console log to
# $TEST_UNDECLARED_OUTPUTS_DIR/vm-console.log. Nothing is left behind: the
# run folder is removed and qemu dies with this script (even on SIGKILL,
# through PR_SET_PDEATHSIG; only the run folder stays then).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ESP for IPv4/IPv6 (UDP encapsulation is built into them), AES-GCM
# (rfc4106: gcm, ctr, ghash) and AES-CBC with HMAC-SHA2 (authenc; sha512
# for SHA-384/512; AES, CBC, HMAC and SHA-256 are built in), IV generators,
# AES-NI and CLMUL (emulated: -cpu max), ESN (authencesn), veth.
default_modules="xfrm_user esp4 esp6 aesni_intel ghash_clmulni_intel ctr ghash_generic gcm seqiv echainiv authenc authencesn sha512_generic veth"

timeout=600
memory=1024
cpus=2
extra_modules=
keep=${STRAIT_VM_KEEP:-}
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}
while (($#)); do
  case $1 in
    --timeout) timeout=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --modules) extra_modules=$2; shift 2 ;;
    --no-default-modules) default_modules=; shift ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "run_in_vm: unknown option $1" >&2; usage ;;
  esac
done
(($#)) || usage
[[ $timeout =~ ^[0-9]+$ ]] || { echo "run_in_vm: --timeout takes seconds" >&2; exit 2; }

started=$SECONDS
kdir=$("$here/setup.sh")
release=$(basename "$kdir")
kroot=$kdir/root

# The run folder: the guest's second 9p share (tools/vm/init.sh). qemu's
# -virtfs option parser takes commas as separators.
base=${TEST_TMPDIR:-${TMPDIR:-/tmp}}
[[ $base != *,* ]] || base=/tmp
run=$(mktemp -d "$base/strait-vm.XXXXXX")

qemu_pid=
tail_pid=
cleanup() {
  local rc=$?
  [[ -n $qemu_pid ]] && kill -KILL "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  [[ -n $tail_pid ]] && kill "$tail_pid" 2>/dev/null && wait "$tail_pid" 2>/dev/null
  if [[ -n $keep ]]; then
    echo "run_in_vm: run folder kept: $run" >&2
  else
    rm -rf "$run"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the initramfs: busybox, /init and the modules that reach the host ---
# Built once per kernel and /init, kept next to the kernel when the cache is
# writable (else built for this run).
initrd_key=$(cat "$here/init.sh" /bin/busybox | sha256sum | cut -c1-16)
initrd=$kdir/initrd-$initrd_key.cpio
if [[ ! -f $initrd ]]; then
  initramfs=$run/initramfs
  mkdir -p "$initramfs"/{bin,modules,proc,sys,dev,host}
  cp /bin/busybox "$initramfs/bin/busybox"
  cp "$here/init.sh" "$initramfs/init"
  chmod 0755 "$initramfs/init"
  : >"$initramfs/modules/load-order"
  while read -r verb path _; do
    [[ $verb == insmod ]] || continue # builtin
    name=$(basename "$path")
    grep -qxF "$name" "$initramfs/modules/load-order" && continue
    cp "$path" "$initramfs/modules/$name"
    echo "$name" >>"$initramfs/modules/load-order"
  done < <(modprobe -d "$kroot" -S "$release" --show-depends -a virtio_pci 9pnet_virtio 9p)
  (cd "$initramfs" && find . | cpio -o -H newc --quiet) >"$run/initrd.cpio"
  rm -rf "$initramfs"
  if [[ -w $kdir ]]; then
    mv "$run/initrd.cpio" "$initrd.$$" && mv "$initrd.$$" "$initrd"
  else
    initrd=$run/initrd.cpio
  fi
fi

# --- what the guest runs ---
echo $default_modules $extra_modules >"$run/modules"
{
  echo '#!/bin/bash'
  while read -r name; do
    case $name in BASHOPTS | SHELLOPTS | BASH_* | PWD | OLDPWD | SHLVL | _) continue ;; esac
    declare -p "$name"
  done < <(compgen -e)
  echo 'export STRAIT_IN_VM=1'
  printf 'export STRAIT_VM_KERNEL_ROOT=%q\n' "$kroot"
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  echo
} >"$run/run.sh"
: >"$run/output"

# --- boot ---
# cryptomgr.notests: the crypto self-tests of every algorithm registered
# (AES-NI alone registers a dozen) cost seconds in emulation.
qemu=(
  qemu-system-x86_64 -nodefaults -no-user-config -no-reboot
  -machine q35 -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$memory"
  -display none -monitor none -nic none -serial "file:$run/console.log"
  -kernel "$kdir/vmlinux" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 mitigations=off cryptomgr.notests=1 strait_kroot=$kroot"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap,id=hostroot"
  -virtfs "local,path=$run,mount_tag=run,security_model=passthrough,id=run"
)
setpriv --pdeathsig KILL -- "${qemu[@]}" >"$run/qemu.log" 2>&1 &
qemu_pid=$!
tail -n +1 -s 0.2 -f --pid="$qemu_pid" "$run/output" &
tail_pid=$!

deadline=$((started + timeout))
timed_out=
while kill -0 "$qemu_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    timed_out=1
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
qemu_rc=0
wait "$qemu_pid" 2>/dev/null || qemu_rc=$?
qemu_pid=
wait "$tail_pid" 2>/dev/null || true
tail_pid=

# The console's last lines on failure; the whole of it goes to Bazel's
# undeclared outputs (bazel-testlogs/.../test.outputs/) when there are any.
if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} && -f $run/console.log ]]; then
  cp "$run/console.log" "$TEST_UNDECLARED_OUTPUTS_DIR/vm-console.log" 2>/dev/null || true
fi
show_logs() {
  echo "run_in_vm: $1; last lines of the VM console:" >&2
  tail -n 60 "$run/console.log" 2>/dev/null | sed 's/^/  | /' >&2 || true
  if [[ -s $run/qemu.log ]]; then
    echo "run_in_vm: qemu said (exit $qemu_rc):" >&2
    sed 's/^/  | /' "$run/qemu.log" >&2
  fi
}

if [[ -n $timed_out ]]; then
  show_logs "timed out after ${timeout} s"
  exit 124
fi
if [[ ! -f $run/rc ]]; then
  if [[ -f $run/setup_failed ]]; then
    show_logs "the VM failed before running the command: $(cat "$run/setup_failed")"
  else
    show_logs "the VM stopped without an exit code"
  fi
  exit 125
fi
rc=$(cat "$run/rc")
boot=$(cut -d' ' -f1 "$run/uptime_start")
ran=$(awk -v a="$boot" '{ printf "%.1f", $1 - a }' "$run/uptime_end")
echo "run_in_vm: kernel $release, boot ${boot} s, command ${ran} s, total $((SECONDS - started)) s, exit $rc" >&2
if [[ $rc -ne 0 ]]; then
  show_logs "the command exited $rc"
fi
exit "$rc"
