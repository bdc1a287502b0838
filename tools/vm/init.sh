#!/bin/busybox sh
# /init of the test VM that tools/vm/run_in_vm.sh boots: busybox sh inside
# the initramfs. It mounts the host's root through 9p at /host, gives it the
# VM's own proc, sys, dev and a tmpfs /run, loads the modules the run asks
# for, runs the run's script chrooted into /host, leaves its exit code in the
# run folder and powers off.
#
# Two 9p shares:
#   hostroot  the host's /, at /host, cached (cache=loose): binaries and
#             libraries are read once, not page by page. The host must not
#             change files the guest reads meanwhile (it does not).
#   run       the run folder, at /run-folder, uncached: run.sh (the command),
#             modules (what to load); the guest writes output (streamed
#             live to the caller), rc (the exit code), or setup_failed, and
#             uptime_start/uptime_end (guest /proc/uptime, for timings).
# The kernel command line gives strait_kroot=DIR, the extracted kernel
# package; its lib/modules is linked into the initramfs so that busybox
# modprobe (no exec over 9p: fast) serves the kernel's module requests.
export PATH=/bin
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

kroot=
for word in $(cat /proc/cmdline); do
  case $word in
    strait_kroot=*) kroot=${word#*=} ;;
  esac
done

host=/host
out=/run-folder
stop() {
  sync
  poweroff -f
}
fail() {
  echo "strait-vm: $*" >&2
  if [ -d $out ]; then echo "$*" >$out/setup_failed; fi
  stop
}

# virtio-pci, 9p over virtio and their dependencies, in load order.
while read -r module; do
  insmod "/modules/$module" || fail "insmod $module failed"
done </modules/load-order

mkdir -p $out $host
# msize: 9p moves at most this much per request (virtio caps it at 512000).
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 run $out ||
  fail "cannot mount the run folder over 9p"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot $host ||
  fail "cannot mount the host's root over 9p"
[ -f $out/run.sh ] || fail "no run.sh in the run folder"

# The VM's own kernel file systems over the host's. Unix sockets cannot live
# on 9p: /run (and so /var/run, ip-netns mounts, daemons' sockets) is a tmpfs.
mount -t proc proc $host/proc
mount -t sysfs sysfs $host/sys
mount -t devtmpfs devtmpfs $host/dev
mkdir -p $host/dev/pts $host/dev/shm
ln -sf /proc/self/fd $host/dev/fd
ln -sf /proc/self/fd/0 $host/dev/stdin
ln -sf /proc/self/fd/1 $host/dev/stdout
ln -sf /proc/self/fd/2 $host/dev/stderr
mount -t devpts -o newinstance,ptmxmode=0666 devpts $host/dev/pts
mount -t tmpfs tmpfs $host/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $host/run

# Kernel module requests (crypto templates, xfrm types, rtnl-link-veth, ...)
# run /proc/sys/kernel/modprobe, resolved from the initramfs root (kernel
# threads never saw the chroot below): busybox modprobe over the kernel
# package's tree, reached through /host.
release=$(uname -r)
mkdir -p /lib/modules
ln -s "$host$kroot/lib/modules/$release" "/lib/modules/$release"
[ -f "/lib/modules/$release/modules.dep" ] || fail "no modules.dep under $kroot"
echo /bin/modprobe >/proc/sys/kernel/modprobe

modules=$(cat $out/modules)
if [ -n "$modules" ]; then
  # shellcheck disable=SC2086 # a list of names
  modprobe -a $modules || fail "modprobe -a $modules failed"
fi
ip link set lo up
# veth hands packets to the receiving CPU's backlog (1000 by default); an
# emulated CPU on a busy host falls behind TCP's bursts and drops them.
echo 10000 >/proc/sys/net/core/netdev_max_backlog

cat /proc/uptime >$out/uptime_start
chroot $host /bin/bash /dev/fd/3 3<$out/run.sh >>$out/output 2>&1 </dev/null
rc=$?
cat /proc/uptime >$out/uptime_end
echo $rc >$out/rc.tmp && mv $out/rc.tmp $out/rc
stop
