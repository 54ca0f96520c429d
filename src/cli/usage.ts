/**
 * What `volt help`, `volt help COMMAND` and `volt COMMAND --help` print:
 * each command's usage, in one place.
 *
 * @module
 */

import { VERSION } from "./options.ts";

/** The overview: every command on a line or two. */
export const OVERVIEW = `volt ${VERSION}: a KVM microVM monitor

Usage:
  volt run [--kernel PATH|debian] [options]
                                     boot a microVM (no --kernel: the default
                                     guest, built and cached on first use)
  volt run --config-file FILE [--api-sock PATH]
  volt run --api-sock PATH [--id ID] boot what a Firecracker config or API
                                     client describes
  volt run --restore FILE --mem-file FILE
                                     restore a snapshot (PUT /snapshot/create)
  volt snapshot rebase --base-file FILE --diff-file FILE
                                     lay a diff snapshot's memory onto its
                                     base (then restore the diff's state)
  volt pool --socket PATH [--size N] [run options]
                                     keep N monitors ready, each with its VM
                                     built (warm start)
  volt run --pool PATH               start one of the pool's VMs on this
                                     terminal, at once
  volt exec --vsock PATH [-t] [--] CMD [ARGS...]
                                     run a command in a running guest (its
                                     --vsock socket): stdout, stderr, stdin
                                     and the exit status, -t a terminal
  volt guest build                   build the default kernel and initramfs
  volt kernel list [--json] | build | fetch debian
                                     guest kernels in the cache
  volt initramfs [--init FILE] [--add HOST:GUEST]... [--busybox] -o OUT[.gz]
  volt initramfs --list FILE         write or list a cpio newc archive
  volt sandbox --print               the seccomp allow-list and its BPF
  volt cpuid [--cpus N] [--cpu-template T] [--json]
                                     print the CPUID table a guest sees
  volt help [COMMAND] | --help      this text, or a command's (also
                                     volt COMMAND --help)
  volt --version                     the version
`;

/** `volt run`'s options. */
export const RUN_OPTIONS = `Run options:
  --kernel PATH        vmlinux (ELF, PVH entry preferred) or bzImage;
                       "debian" fetches Debian's cloud kernel
  --initrd PATH        initial ramdisk
  --cmdline S          replace the default kernel command line
  --append S           append to the kernel command line
  --memory SIZE        guest RAM, e.g. 128M, 1G (default 128M)
  --cpus N             vCPUs, 1 to 32 (default 1)
  --boot PROTO         auto | pvh | linux64 (default auto)
  --cpu-template T     auto | none | pvm (default auto: pvm on PVM hosts)
  --kvm PATH           the KVM device (default /dev/kvm)
  --no-seccomp         skip the seccomp allow-list (on by default: any
                       other syscall kills the monitor)
  --seccomp-log        log syscalls outside the allow-list instead of
                       killing (to calibrate it on a new host)
  --no-landlock        skip Landlock (on by default: the monitor opens only
                       the guest's files, /dev/kvm and Deno's own)
  --require-sandbox    refuse to boot when a layer cannot be applied
  --allow-root-without-landlock
                       run the monitor as root where Landlock is off or
                       missing (refused by default: root keeps its files)
  --metrics-json PATH  write the boot phases, VMM init and guest boot time
                       (volt-init's boot-timer write) as JSON at exit
  --console-mode M     auto | safe | raw (default auto: safe when stdout is a
                       terminal and stdin is not); safe keeps the guest's
                       OSC, DCS, terminal queries and charset switches from
                       your terminal, raw passes every byte
  --disk PATH[,rw][,id=NAME]
                       a virtio disk (read-only unless rw; repeatable)
  --rootfs [PATH][,rw] boot from an ext4 root image (default: the default
                       guest's)
  --entropy            a virtio-rng device (/dev/hwrng)
  --net tap=NAME[,mac=MAC][,id=NAME]
                       a virtio-net interface on an existing TAP (repeatable)
  --vsock cid=N,uds=PATH
                       a virtio-vsock device, Firecracker's host side: host
                       clients connect to PATH ("CONNECT <port>\n"), guest
                       connections to port P reach PATH_P
  --config-file FILE   Firecracker's JSON configuration (boot-source, drives,
                       machine-config, network-interfaces, vsock, logger,
                       entropy; Volt's own settings under "volt"): it
                       describes the whole VM, so the flags above are refused
                       beside it; a field Volt does not support is refused
  --api-sock PATH      serve Firecracker's REST API on a unix socket: without
                       --config-file the VM waits for its configuration and
                       InstanceStart; PATCH /vm pauses and resumes it
  --id ID              the instance id the API reports (with --api-sock)
  --no-api             no API socket (with --config-file; the default)
  --snapshot-dir DIR   PUT /snapshot/create may write there (and only there:
                       the jailed monitor gets write access to DIR alone)
  --track-dirty-pages  record the pages the guest and devices write, so that
                       snapshot/create can take a "Diff" (also with --restore)
  --restore FILE       restore the VM a snapshot's state file describes (VM
                       flags are refused: the snapshot says all of it)
  --mem-file FILE      the snapshot's memory file (with --restore), mapped
                       privately: clones of one snapshot share its pages
  --paused             keep the restored VM paused (resume with PATCH /vm)
  --vsock-uds PATH     the restored vsock device's socket (two clones need two)
  --net-tap ID=TAP     the restored interface ID's TAP (repeatable)
  --pool PATH          take a VM of the pool at PATH (volt pool): its flags
                       describe the VM, so the flags above are refused
  --log-level L        trace | debug | info | warning | error | fatal | off
                       (default warning)
  --native             boot on this host: ./volt run otherwise boots in the
                       nested-KVM helper VM where /dev/kvm is absent or PVM
                       (whose guests reach init but cannot run userspace)
`;

/** What volt's exit status means. */
export const EXIT_STATUS =
  `Exit status: the guest's status when it reports one from 0 to 63, 86 when
it reports another (a line names it), 0 on guest reset or power-off,
64 usage, 65 bad input file, 66 missing file, 69 no usable KVM, 70 monitor
failure, 73 cannot write an output file, 80 triple fault, 81 entry failure,
82 KVM internal error, 83 guest crash, 84 unexpected KVM exit, 85 guest
userspace cannot run on this host (PVM), 129 SIGHUP, 130 SIGINT, 131 SIGQUIT,
143 SIGTERM (each restores the terminal first). In a terminal, Ctrl-A x
stops the VM.
`;

/** Each command's usage, by name. */
export const COMMAND_USAGE: Record<string, string> = {
  run: `Usage:
  volt run [--kernel PATH|debian] [options]
  volt run --config-file FILE [--api-sock PATH] [options]
  volt run --api-sock PATH [--id ID] [options]
  volt run --restore FILE --mem-file FILE [--paused] [--api-sock PATH] [options]

Boots a microVM and waits for it: from flags, from Firecracker's JSON
configuration, or from what a Firecracker API client configures.

${RUN_OPTIONS}
${EXIT_STATUS}`,
  exec: `Usage: volt exec --vsock PATH [-t] [--] CMD [ARGS...]

Runs a command in a running guest through its vsock socket (volt-init's
exec agent on port 10000): stdout and stderr apart, stdin passed, the
command's exit status as volt's (127: no such command; 66: no VM there).

  --vsock PATH   the socket the VM was started with (--vsock cid=N,uds=PATH)
  -t, --tty      run the command on a terminal (a pty in the guest)
`,
  pool: `Usage: volt pool --socket PATH [--size N] [run options]

Keeps N (default 2, at most 32) jailed monitors ready on the unix socket
PATH, each with its VM built from the run options (memory, devices, kernel,
vCPUs and their threads) and waiting. volt run --pool PATH takes one: its VM
starts at once, on that process's terminal (stdin, stdout and stderr), and
volt run exits with the VM's status. A new monitor replaces each one taken.
The first monitor that fails to start ends the pool with its error. Options
each VM would need its own of (--net, --vsock, --api-sock, a rw disk) are
refused. SIGINT or SIGTERM stops the pool; VMs already taken go on.

  --socket PATH   where clients connect (a stale socket there is replaced)
  --size N        monitors kept ready
`,
  guest: `Usage: volt guest build

Builds (or finds in ~/.cache/volt) the default guest: the microVM kernel,
the volt-init + busybox initramfs and the ext4 root image; prints their paths.
`,
  kernel: `Usage: volt kernel list [--json] | build | fetch debian

  list [--json]  the guest kernels in the cache (JSON: name, vmlinux, ready)
  build          build the project's microVM kernel (minutes, once)
  fetch debian   fetch Debian's cloud kernel (and extract its vmlinux)
`,
  initramfs: `Usage:
  volt initramfs [--init FILE] [--add HOST:GUEST]... [--busybox] -o OUT[.gz]
  volt initramfs --list FILE

Writes a cpio newc archive (gzip when OUT ends in .gz), or lists one.

  --init FILE        the archive's /init (default: volt-init)
  --add HOST:GUEST   a host file at a guest path (repeatable)
  --busybox          Debian's static busybox and its applet links
  -o, --output OUT   where to write
  --list FILE        print an archive's entries
`,
  snapshot: `Usage: volt snapshot rebase --base-file FILE --diff-file FILE

Writes the pages a diff snapshot's memory file holds (snapshot_type "Diff")
onto the memory file of the snapshot before it, as Firecracker's rebase-snap
does: the diff's state file then restores from --base-file. The new base is
written beside the old one and renamed over it, so VMs restored from the old
one go on undisturbed. Both files must be of the same size.
`,
  sandbox: `Usage: volt sandbox --print

Prints the monitor's seccomp allow-list and the one each vCPU thread adds.
`,
  cpuid: `Usage: volt cpuid [--cpus N] [--cpu N] [--cpu-template T] [--json]

Prints the CPUID table vCPU --cpu (default 0) of a --cpus-vCPU guest sees on
this host, and the kernel command line the template adds.

  --cpu-template T   auto | none | pvm | nested-tcg (default auto)
  --json             the table and the command line as JSON
`,
  help: `Usage: volt help [COMMAND]

Prints the overview, or COMMAND's usage (as volt COMMAND --help does).
`,
};

/** What `volt help` prints: the overview, the run options and the exit status. */
export const HELP = `${OVERVIEW}
${RUN_OPTIONS}
${EXIT_STATUS}`;
