#!/usr/bin/env bash
# Build the Volt microVM guest kernel.
#
#   guest/kernel/build.sh <linux-source.tar.xz> <out-dir> [work-dir]
#
# e.g. guest/kernel/build.sh /usr/src/linux-source-6.1.tar.xz out/kernel
#
# Extracts the tarball into <work-dir> (default <out-dir>/work, wiped first),
# applies patches/*.patch in name order, runs `make tinyconfig`, merges
# microvm.config, runs `make olddefconfig`, checks that every option the
# fragment asks for survived, builds vmlinux + bzImage and copies into
# <out-dir>: vmlinux (debug info stripped), bzImage, config.
#
# Progress: one line per stage on stderr, "volt-kernel: [n/8] ...".
# Compiler output goes to <work-dir>/build.log; its tail is shown on failure.
# Exit status is non-zero on any failure, with a one-line reason last.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/microvm.config"
total=8
stage_no=0

say() { printf 'volt-kernel: %s\n' "$*" >&2; }
stage() { stage_no=$((stage_no + 1)); say "[$stage_no/$total] $*"; }
die() { say "error: $*"; exit 1; }

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 <linux-source.tar.xz> <out-dir> [work-dir]" >&2
  exit 2
fi
tarball="$1"
out="$2"
work="${3:-$out/work}"

[[ -f "$tarball" ]] || die "no such source tarball: $tarball"
[[ -f "$fragment" ]] || die "missing config fragment: $fragment"
for tool in make gcc ld flex bison bc perl patch tar xz strip; do
  command -v "$tool" >/dev/null || die "missing build tool: $tool (apt-get install build-essential flex bison bc xz-utils)"
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
tarball="$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")"
rm -rf "$work"
mkdir -p "$work/src"
work="$(cd "$work" && pwd)"
src="$work/src"
log="$work/build.log"
: >"$log"
started=$SECONDS

# Run a command with its output in the log; on failure show the log tail and
# end with a single reason line.
run() {
  local what="$1"; shift
  if ! "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "$what failed (full log: $log)"
  fi
}

kmake() { make -C "$src" ARCH=x86_64 "$@"; }

stage "extracting $(basename "$tarball")"
# The top directory's name differs between tarballs (linux-source-6.1/,
# linux-6.1.y/): drop it.
run "extract" tar -xf "$tarball" -C "$src" --strip-components=1
[[ -f "$src/Makefile" && -d "$src/arch/x86" ]] || die "tarball does not look like a Linux source tree: $tarball"

shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob
stage "applying ${#patches[@]} patch(es)"
for p in "${patches[@]}"; do
  say "      $(basename "$p")"
  run "patch $(basename "$p")" patch -d "$src" -p1 --forward --batch -s -i "$p"
done

stage "make tinyconfig"
run "make tinyconfig" kmake tinyconfig

stage "merging $(basename "$fragment") + make olddefconfig"
# merge_config.sh writes .config in its working directory.
run "merge_config.sh" bash -c 'cd "$1" && ./scripts/kconfig/merge_config.sh -m .config "$2"' _ "$src" "$fragment"
run "make olddefconfig" kmake olddefconfig

stage "verifying required options"
# Kconfig silently drops options whose dependencies are not met: insist that
# every "CONFIG_X=v" in the fragment is in the final .config as asked and
# every "# CONFIG_X is not set" stays off.
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      key="${line%%=*}"
      want="${line#*=}"
      got="$(grep -m1 "^$key=" "$src/.config" | cut -d= -f2- || true)"
      [[ "$got" == "$want" ]] ||
        die "$key is ${got:-not set} after olddefconfig, fragment wants $want (a dependency is missing)"
      ;;
    "# CONFIG_"*" is not set")
      key="${line#\# }"
      key="${key%% *}"
      if grep -q "^$key=" "$src/.config"; then
        die "$key is $(grep -m1 "^$key=" "$src/.config" | cut -d= -f2-) after olddefconfig, fragment wants it off (something selects it)"
      fi
      ;;
  esac
done <"$fragment"

jobs="$(nproc 2>/dev/null || echo 1)"
stage "building vmlinux + bzImage (make -j$jobs, log: $log)"
run "kernel build" kmake -j"$jobs" vmlinux bzImage

stage "copying vmlinux, bzImage, config to $out"
strip --strip-debug -o "$out/vmlinux" "$src/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$out/bzImage"
cp "$src/.config" "$out/config"

elapsed=$((SECONDS - started))
stage "done in $((elapsed / 60))m$((elapsed % 60))s: vmlinux $(stat -c %s "$out/vmlinux") bytes, bzImage $(stat -c %s "$out/bzImage") bytes"
