#!/usr/bin/env bash
# Userspace ESP against the Linux kernel's ESP, in a VM (this machine's
# kernel has no ESP; Debian's has). Inside the VM, namespace "k" runs
# kernel XFRM with static SAs (`ip xfrm state ... encap espinudp`) and
# namespace "u" runs strait-uesp with the same keys; ping and a TCP
# stream cross between them for each algorithm, with and without ESN.
#
#   [CASES=REGEX] dataplane/interop/kernel_esp_vm.sh [WORKDIR]
#
# Needs root, qemu-system-x86_64, busybox (static), cpio, depmod, python3,
# iproute2, and a built //dataplane:strait-uesp. Fetches Debian's kernel
# image package into WORKDIR (default /tmp/strait-uesp-vm) with apt-get
# download. Prints one line per case and exits non-zero if any failed.
#
# Result on this machine (Debian kernel 6.1.0-56, qemu TCG, ~1 min per
# case): all ten cases (AES-GCM-16 128/256, AES-256-CBC with HMAC-SHA-256/
# 384/512, each with and without ESN) pass: pings both ways, a fragmented
# 3000-byte ping, and 2 MiB of TCP from the kernel side (MSS 1338) with
# matching SHA-256; no integrity or replay failures on either side, and
# the kernel's byte counters equal ours (both count inner bytes).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cases=${CASES:-.}  # A regular expression over case names, e.g. 'gcm.*esn=yes'.
work=${1:-/tmp/strait-uesp-vm}
uesp=$repo/bazel-bin/dataplane/strait-uesp
[[ -x $uesp ]] || { echo "build //dataplane:strait-uesp first" >&2; exit 2; }
for tool in qemu-system-x86_64 busybox cpio depmod python3 ip; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
mkdir -p "$work"
cd "$work"

# --- Kernel and modules.
if ! ls k/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  apt-get download "$pkg"
  dpkg-deb -x "$pkg"_*.deb k
fi
version=$(find k/lib/modules -mindepth 1 -maxdepth 1 -printf "%f\n" | head -1)
[[ -f k/lib/modules/$version/modules.dep ]] || depmod -b k "$version"

# --- Initramfs: busybox, the 9p modules, /init.
rm -rf initramfs && mkdir -p initramfs/{bin,sbin,proc,sys,dev,host,lib/modules/"$version"}
cp "$(command -v busybox)" initramfs/bin/busybox
dep=k/lib/modules/$version/modules.dep
closure() {  # Module paths needed for $1, dependencies first.
  local line
  line=$(grep -E "(^|/)$1\.ko:" "$dep")
  for d in ${line#*:}; do closure "$(basename "$d" .ko)"; done
  echo "${line%%:*}"
}
for m in virtio_pci 9pnet_virtio 9p; do
  for path in $(closure "$m"); do
    mkdir -p "initramfs/lib/modules/$version/$(dirname "$path")"
    cp "k/lib/modules/$version/$path" "initramfs/lib/modules/$version/$path"
    grep -qx "$path" initramfs/order 2>/dev/null || echo "$path" >>initramfs/order
  done
done
cp "$dep" "initramfs/lib/modules/$version/"
cat >initramfs/sbin/modprobe-host <<HOST
#!/bin/busybox sh
exec /bin/busybox chroot /host /usr/sbin/modprobe -d $work/k "\$@"
HOST
cat >initramfs/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for path in \$(cat /order); do insmod /lib/modules/$version/\$path; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostroot /host
mount --bind /proc /host/proc; mount --bind /sys /host/sys; mount --bind /dev /host/dev
mount -t tmpfs tmpfs /host/run
echo /sbin/modprobe-host >/proc/sys/kernel/modprobe
chroot /host /bin/bash $work/inside.sh
echo "INSIDE-EXIT=\$?"
poweroff -f
INIT
chmod +x initramfs/init initramfs/sbin/modprobe-host
(cd initramfs && find . | cpio -o -H newc 2>/dev/null | gzip -1) >initrd.gz

# --- What runs inside the VM (in a chroot of this machine's root).
cat >inside.sh <<INSIDE
#!/bin/bash
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
K=$work/k
for m in tun veth xfrm_user esp4 aesni_intel ctr ghash_generic gcm seqiv echainiv authenc \
         authencesn cbc hmac sha256_generic sha512_generic; do
  modprobe -d \$K \$m 2>/dev/null || echo "module \$m: not loaded"
done
ip netns add k && ip netns add u
ip link add vk netns k type veth peer name vu netns u
ip -n k link set lo up; ip -n u link set lo up
ip -n k addr add 192.0.2.1/24 dev vk; ip -n k link set vk up
ip -n u addr add 192.0.2.2/24 dev vu; ip -n u link set vu up
ip -n k addr add 10.1.0.1/32 dev lo; ip -n u addr add 10.2.0.1/32 dev lo
ip -n k route add 10.2.0.0/24 dev vk src 10.1.0.1
# The kernel decapsulates ESP-in-UDP only on a socket with UDP_ENCAP set.
ip netns exec k python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 100, 2)  # UDP_ENCAP, UDP_ENCAP_ESPINUDP
s.bind(("192.0.2.1", 4500))
time.sleep(100000)' &

fail=0
CASES='$cases'
run_case() {  # name esp_keyword esn xfrm_algorithm_args_out xfrm_args_in key_out key_in integ_out integ_in
  local name=\$1 esp=\$2 esn=\$3 alg_out=\$4 alg_in=\$5 kout=\$6 kin=\$7 iout=\$8 iin=\$9
  [[ \$name =~ \$CASES ]] || return 0
  ip -n k xfrm state flush; ip -n k xfrm policy flush
  local flags="replay-window 64"
  local uflags=""
  if [[ \$esn == yes ]]; then flags="flag esn replay-window 128"; uflags="--esn --replay-window=128"; fi
  # k -> u: spi 0x1001 (k's out); u -> k: spi 0x2002.
  ip -n k xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 reqid 1 mode tunnel \
      \$alg_out encap espinudp 4500 4500 0.0.0.0 \$flags || { echo "CASE \$name: xfrm state refused"; fail=1; return; }
  ip -n k xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2002 reqid 1 mode tunnel \
      \$alg_in encap espinudp 4500 4500 0.0.0.0 \$flags
  ip -n k xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir out \
      tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 1 mode tunnel
  ip -n k xfrm policy add src 10.2.0.0/24 dst 10.1.0.0/24 dir in \
      tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 1 mode tunnel
  ip netns exec u $uesp --local=192.0.2.2 --remote=192.0.2.1 --local-ts=10.2.0.0/24 \
      --remote-ts=10.1.0.0/24 --esp=\$esp --spi-out=0x2002 --spi-in=0x1001 \
      --key-out=\$kin --key-in=\$kout --integ-key-out=\$iin --integ-key-in=\$iout \$uflags \
      --tun-name=su0 --duration=600s --log-level=warning >/tmp/uesp.json 2>/tmp/uesp.log &
  local pid=\$!
  for i in \$(seq 50); do ip -n u link show su0 >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 0.5
  local ok=yes
  ip netns exec k busybox ping -c 3 -W 3 10.2.0.1 >/tmp/ping1 2>&1 || ok=no
  ip netns exec u busybox ping -c 3 -W 3 10.1.0.1 >/tmp/ping2 2>&1 || ok=no
  ip netns exec u busybox ping -c 2 -W 3 -s 3000 10.1.0.1 >/tmp/ping3 2>&1 || ok=no
  # A full-size TCP stream from the kernel side to ours.
  ip netns exec u python3 -c '
import socket, hashlib
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("10.2.0.1", 5001)); l.listen(1); l.settimeout(30)
c, _ = l.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
open("/tmp/tcp.srv", "w").write("%d %s" % (n, h.hexdigest()))' &
  local srv=\$!
  ip netns exec k python3 -c '
import socket, hashlib, os, time
data = os.urandom(2 << 20)
for attempt in range(100):  # The server starts slowly under emulation.
    try:
        s = socket.create_connection(("10.2.0.1", 5001), timeout=30)
        break
    except ConnectionRefusedError:
        time.sleep(0.2)
mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
s.sendall(data); s.close()
open("/tmp/tcp.cli", "w").write("%d %s %d" % (len(data), hashlib.sha256(data).hexdigest(), mss))' || ok=no
  wait \$srv || ok=no
  local srv_res cli_res
  srv_res=\$(cat /tmp/tcp.srv 2>/dev/null); cli_res=\$(cat /tmp/tcp.cli 2>/dev/null)
  [[ -n \$srv_res && "\${cli_res% *}" == "\$srv_res" ]] || ok=no
  kill -TERM \$pid; wait \$pid
  local counters; counters=\$(ip -n k -s xfrm state | grep -A0 -E "^\s+[0-9]+\(bytes\)" | tr -s ' ' | tr '\n' ';')
  echo "CASE \$name: \$ok tcp_mss=\${cli_res##* } uesp=\$(cat /tmp/uesp.json) kernel_lifetime_current=[\$counters] errors=[\$(ip -n k -s xfrm state | grep -E 'replay-window|integrity' | tr -s ' ' | tr '\n' ';')]"
  [[ \$ok == yes ]] || { fail=1; cat /tmp/ping1 /tmp/ping2 /tmp/ping3 /tmp/uesp.log | tail -20; }
}

hex() { python3 -c "import sys; print(bytes((int(sys.argv[1]) * 7 + i * 13) % 256 for i in range(int(sys.argv[2]))).hex())" \$1 \$2; }
for esn in no yes; do
  k1=\$(hex 1 20); k2=\$(hex 2 20)
  run_case "aes128gcm16 esn=\$esn" aes128gcm16 \$esn "aead rfc4106(gcm(aes)) 0x\$k1 128" \
      "aead rfc4106(gcm(aes)) 0x\$k2 128" \$k1 \$k2 "" ""
  k1=\$(hex 3 36); k2=\$(hex 4 36)
  run_case "aes256gcm16 esn=\$esn" aes256gcm16 \$esn "aead rfc4106(gcm(aes)) 0x\$k1 128" \
      "aead rfc4106(gcm(aes)) 0x\$k2 128" \$k1 \$k2 "" ""
  for sha in 256:128 384:192 512:256; do
    bits=\${sha%:*}; trunc=\${sha#*:}
    k1=\$(hex 5 32); k2=\$(hex 6 32); i1=\$(hex 7 \$((bits / 8))); i2=\$(hex 8 \$((bits / 8)))
    run_case "aes256-sha\$bits esn=\$esn" aes256-sha\$bits \$esn \
        "enc cbc(aes) 0x\$k1 auth-trunc hmac(sha\$bits) 0x\$i1 \$trunc" \
        "enc cbc(aes) 0x\$k2 auth-trunc hmac(sha\$bits) 0x\$i2 \$trunc" \$k1 \$k2 \$i1 \$i2
  done
done
echo "INTEROP-RESULT fail=\$fail"
exit \$fail
INSIDE
chmod +x inside.sh

# --- Boot.
timeout 900 qemu-system-x86_64 -machine q35 -cpu max -m 1024 -smp 2 -nographic -no-reboot \
  -kernel k/boot/vmlinuz-"$version" -initrd initrd.gz \
  -append "console=ttyS0 panic=-1 quiet" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,id=hr | tee vm.log |
  grep -E "CASE|INTEROP-RESULT|INSIDE-EXIT|module|refused|Kernel panic" || true
grep -q "INTEROP-RESULT fail=0" vm.log
