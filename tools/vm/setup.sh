#!/usr/bin/env bash
# Prepares what tools/vm/run_in_vm.sh boots: installs qemu, busybox-static,
# cpio and kmod when missing, and puts Debian's own kernel (the package that
# `linux-image-amd64` depends on) into a cache outside the tree, extracted
# and depmod'ed. Prints the kernel's cache folder on stdout.
#
# Cache: $STRAIT_VM_CACHE, default /var/cache/strait-vm, one folder per
# kernel release (e.g. 6.1.0-56-amd64/) holding `root/` (the package's files,
# with drivers the VM never loads pruned: about 120 MB), `vmlinux` (the
# kernel, uncompressed: about 65 MB) and `ready` (the layout's version). It
# survives across runs and work trees; delete it to start over.
# A newer kernel in Debian's archive gets a folder of its own next to the old
# one. Without the archive (offline, no apt lists) the newest cached kernel
# is used. STRAIT_VM_KERNEL_PACKAGE=linux-image-X-amd64 picks one.
#
# Safe to run concurrently (tests in parallel): the cache is filled under a
# lock, and a kernel folder is used only once `ready` holds this script's
# layout version.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

cache=${STRAIT_VM_CACHE:-/var/cache/strait-vm}
layout=strait-vm-2 # Bump when what a kernel folder holds changes.
log() { echo "vm/setup: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# --- packages ---
packages=(qemu-system-x86 busybox-static cpio kmod)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing packages: ${missing[*]}; run as root"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# --- which kernel ---
# apt-cache takes a second or more on a busy machine: its answer is kept in
# $cache/resolved until the package lists change (apt-get update).
kernel_package() {
  if [[ -n ${STRAIT_VM_KERNEL_PACKAGE:-} ]]; then
    echo "$STRAIT_VM_KERNEL_PACKAGE"
    return
  fi
  local lists=/var/lib/apt/lists answer
  if [[ -s $cache/resolved && $cache/resolved -nt $lists ]]; then
    cat "$cache/resolved"
    return
  fi
  answer=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
  if [[ -n $answer && -w $cache ]]; then
    echo "$answer" >"$cache/resolved.$$" && mv "$cache/resolved.$$" "$cache/resolved"
  fi
  echo "$answer"
}

newest_cached() {
  local d
  for d in $(ls -1d "$cache"/*/ 2>/dev/null | sort -V -r); do
    if [[ $(cat "$d/ready" 2>/dev/null) == "$layout" ]]; then
      echo "${d%/}"
      return
    fi
  done
}

[[ $(id -u) -ne 0 ]] || mkdir -p "$cache"
package=$(kernel_package)
if [[ -z $package && $(id -u) -eq 0 ]] && [[ -z $(newest_cached) ]]; then
  # A fresh machine has no package lists yet.
  apt-get update -q >&2 || true
  package=$(kernel_package)
fi
if [[ -z $package ]]; then
  dir=$(newest_cached)
  [[ -n $dir ]] || die "cannot tell which kernel linux-image-amd64 depends on (apt-get update?) and none is cached in $cache"
  log "no apt lists: using the cached $(basename "$dir")"
  echo "$dir"
  exit 0
fi

release=${package#linux-image-}
dir=$cache/$release
if [[ $(cat "$dir/ready" 2>/dev/null) == "$layout" ]]; then
  echo "$dir"
  exit 0
fi

# The uncompressed ELF kernel out of a bzImage, when it has a PVH entry that
# qemu can start it at. Decompressing an xz kernel in software emulation
# takes 3 to 10 s of every boot; this is done once here instead.
extract_vmlinux() {
  local bzimage=$1 config=$2 out=$3 magic offset tool
  grep -qx CONFIG_PVH=y "$config" || return 1
  for magic in $'\xfd7zXZ\x00':xz $'\x28\xb5\x2f\xfd':zstd $'\x1f\x8b\x08':gzip; do
    tool=${magic##*:}
    offset=$(LC_ALL=C grep -abo -m1 "${magic%:*}" "$bzimage" | head -1 | cut -d: -f1) || continue
    [[ -n $offset ]] || continue
    # The payload is followed by the bzImage's trailer: read one stream only.
    case $tool in
      xz) tail -c +$((offset + 1)) "$bzimage" | xz -dcq --single-stream >"$out" 2>/dev/null || true ;;
      zstd) tail -c +$((offset + 1)) "$bzimage" | zstd -dcq >"$out" 2>/dev/null || true ;;
      gzip) tail -c +$((offset + 1)) "$bzimage" | gzip -dcq >"$out" 2>/dev/null || true ;;
    esac
    [[ $(head -c 4 "$out" 2>/dev/null) == $'\x7fELF' ]] && return 0
  done
  rm -f "$out"
  log "no PVH ELF kernel inside $(basename "$bzimage"): booting the compressed one (slower)"
  return 1
}

# --- fetch, extract, prune, depmod (once, under the lock) ---
[[ $(id -u) -eq 0 ]] || die "$dir is not prepared; run as root once: $0"
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [[ $(cat "$dir/ready" 2>/dev/null) != "$layout" ]]; then
  start=$SECONDS
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp"
  log "downloading $package"
  # As root: the _apt user could not write into the cache folder.
  (cd "$dir.tmp" && apt-get download -q -o APT::Sandbox::User=root "$package" >&2)
  deb=$(ls "$dir.tmp"/*.deb)
  log "extracting $(basename "$deb")"
  dpkg-deb -x "$deb" "$dir.tmp/root"
  rm -f "$deb"
  modules=$dir.tmp/root/lib/modules/$release
  [[ -d $modules ]] || die "$package has no lib/modules/$release"
  # The VM has virtio devices only: keep virtio, network and crypto drivers,
  # drop the rest (graphics, sound, media, wireless: most of the package).
  find "$modules/kernel/drivers" -mindepth 1 -maxdepth 1 \
    ! -name virtio ! -name net ! -name char ! -name block ! -name crypto \
    -exec rm -rf {} +
  rm -rf "$modules/kernel/sound" "$modules/kernel/drivers/net/"{wireless,ethernet,usb,wwan,can,ieee802154}
  depmod -b "$dir.tmp/root" "$release"
  extract_vmlinux "$dir.tmp/root/boot/vmlinuz-$release" "$dir.tmp/root/boot/config-$release" \
    "$dir.tmp/vmlinux" ||
    cp "$dir.tmp/root/boot/vmlinuz-$release" "$dir.tmp/vmlinux"
  echo "$package" >"$dir.tmp/package"
  echo "$layout" >"$dir.tmp/ready"
  mv "$dir.tmp" "$dir"
  log "kernel $release ready in $dir ($((SECONDS - start)) s)"
fi
echo "$dir"
