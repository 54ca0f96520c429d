#!/usr/bin/env bash
# Volt launcher: installs what is missing (Deno 2.9.6 from npm, Debian
# packages), then runs the monitor (`./volt run ...`), the tests
# (`./volt test`) or any other `volt` command.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
export DENO_NO_UPDATE_CHECK=1

say() { printf 'volt: %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Debian packages by purpose.
guest_pkgs=(musl-tools gcc make flex bison bc libelf-dev libssl-dev xz-utils perl patch)
test_pkgs=(binutils linux-libc-dev cpio)
nested_pkgs=(qemu-system-x86)

ensure_pkgs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_deno() {
  if command -v deno >/dev/null && [[ "$(deno --version 2>/dev/null | head -n1)" == "deno 2.9.6 "* ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    ensure_pkgs nodejs npm
  fi
  say "installing Deno 2.9.6 from npm"
  as_root npm install -g --silent deno@2.9.6 >/dev/null
  # npm's `deno` is a Node wrapper (+100 ms, +40 MB a start): link the native binary.
  local root native
  root="$(npm root -g)"
  for native in "$root/deno/deno" "$root/deno/node_modules/@deno/linux-x64-glibc/deno"; do
    if [[ -x "$native" ]]; then
      as_root ln -sf "$native" /usr/local/bin/deno
      break
    fi
  done
  hash -r
  deno --version >/dev/null
}

have_kvm() { [[ -r /dev/kvm && -w /dev/kvm ]]; }
is_pvm() { [[ -d /sys/module/kvm_pvm ]]; }

ensure_deno
cmd="${1:-help}"
case "$cmd" in
  test)
    shift
    ensure_pkgs "${guest_pkgs[@]}" "${test_pkgs[@]}"
    if ! have_kvm || is_pvm; then ensure_pkgs "${nested_pkgs[@]}"; fi
    exec deno run -A "$here/tools/test.ts" "$@"
    ;;
  run)
    ensure_pkgs "${guest_pkgs[@]}"
    # Hardware KVM boots here; without /dev/kvm, or on PVM (no guest
    # userspace), tools/boot.ts boots in the helper VM unless --native.
    if have_kvm && ! is_pvm; then exec deno run -A "$here/mod.ts" "$@"; fi
    ensure_pkgs "${nested_pkgs[@]}"
    shift
    exec deno run -A "$here/tools/boot.ts" "$@"
    ;;
  guest | kernel)
    ensure_pkgs "${guest_pkgs[@]}"
    exec deno run -A "$here/mod.ts" "$@"
    ;;
  *)
    exec deno run -A "$here/mod.ts" "$@"
    ;;
esac
