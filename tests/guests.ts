/**
 * Small guest programs for KVM tests, assembled with binutils. Each runs in
 * microseconds of guest time, so they stay fast under emulated KVM.
 */
import { assembleElf, tmpDir } from "./helpers.ts";
import { makeBzImage } from "./images.ts";

/** Prints the NUL-terminated string at `label` on COM1 (clobbers rsi, dx, al). */
const PRINT = (label: string) => `
  lea rsi, [rip + ${label}]
  mov dx, 0x3f8
9: lodsb
  test al, al
  jz 8f
  out dx, al
  jmp 9b
8:`;

/** Reports `status` on the exit port. */
const EXIT = (status: number) => `
  mov dx, 0xf4
  mov eax, ${status}
  out dx, eax
  hlt`;

/** Prints a line and exits with 7. */
export const hello = () =>
  assembleElf(`${PRINT("msg")}${EXIT(7)}
msg: .asciz "Hello from a volt guest\\n"`);

/** Prints a marker, then resets through the i8042. */
export const i8042Reset = () =>
  assembleElf(`${PRINT("msg")}
  mov al, 0xfe
  out 0x64, al
  hlt
msg: .asciz "resetting\\n"`);

/** Reads an unclaimed port (expects all-ones), floods port 0x80 and an unclaimed port. */
export const unclaimedPorts = () =>
  assembleElf(`
  mov dx, 0x1234
  in eax, dx
  cmp eax, 0xffffffff
  jne 1f
  mov ecx, 2000
2: out 0x80, al
  mov dx, 0x2345
  out dx, al
  loop 2b
${PRINT("ok")}${EXIT(0)}
1:${PRINT("bad")}${EXIT(1)}
ok: .asciz "unclaimed reads all-ones\\n"
bad: .asciz "unclaimed read was not all-ones\\n"`);

/** ud2 with no usable IDT: #UD, #GP, #DF, triple fault. */
export const tripleFault = () => assembleElf(`${PRINT("msg")}\n  ud2\nmsg: .asciz "faulting\\n"`);

/** Jumps into unbacked guest-physical memory: KVM cannot emulate the fetch. */
export const emulationFailure = () =>
  assembleElf(`${PRINT("msg")}
  mov rax, 0x30000000
  jmp rax
msg: .asciz "jumping\\n"`);

/**
 * A hostile guest: floods the POST port, an unclaimed port and the i8042
 * data port, writes and reads unbacked guest-physical memory (MMIO exits
 * nothing claims), prints a marker, then does all of it forever.
 */
export const hostile = () =>
  assembleElf(`
  mov rdi, 0x30000000
  mov ecx, 3000
2: out 0x80, al
  mov dx, 0x2345
  out dx, al
  out 0x60, al
  mov dword ptr [rdi], 0xdeadbeef
  mov ebx, dword ptr [rdi + 8]
  loop 2b
${PRINT("msg")}
1: out 0x80, al
  mov dx, 0x2345
  in al, dx
  mov dword ptr [rdi], ecx
  inc ecx
  jmp 1b
msg: .asciz "hostile\n"`);

/** Prints a marker then spins forever (SIGTERM must still stop the monitor). */
export const spin = () => assembleElf(`${PRINT("msg")}\n1: jmp 1b\nmsg: .asciz "spinning\\n"`);

/**
 * Echoes serial input using the RX interrupt through the in-kernel PIC:
 * remaps the PIC to vector 0x20, unmasks IRQ 4 only, enables the UART's RX
 * interrupt and halts; the handler echoes each byte and exits 0 on 'q'.
 */
export const serialEcho = () =>
  assembleElf(`
  # IDT gates, selector 0x10 (64-bit code), present interrupt gates: vector
  # 0x24 (IRQ 4) echoes; every other PIC vector, 0x27 and 0x2f above all
  # (the 8259's spurious interrupt when a line drops before it is taken),
  # returns, so a spurious one cannot triple-fault the guest.
  mov ecx, 0x20
5: lea rdi, [rip + idt]
  mov eax, ecx
  shl eax, 4
  add rdi, rax
  lea rax, [rip + spurious]
  cmp ecx, 0x24
  jne 6f
  lea rax, [rip + handler]
6: mov word ptr [rdi], ax
  mov word ptr [rdi + 2], 0x10
  mov word ptr [rdi + 4], 0x8e00
  shr rax, 16
  mov word ptr [rdi + 6], ax
  shr rax, 16
  mov dword ptr [rdi + 8], eax
  inc ecx
  cmp ecx, 0x30
  jne 5b
  lidt [rip + idtr]
  # 8259 initialization: ICW1..ICW4 on both chips.
  mov al, 0x11
  out 0x20, al
  out 0xa0, al
  mov al, 0x20
  out 0x21, al
  mov al, 0x28
  out 0xa1, al
  mov al, 4
  out 0x21, al
  mov al, 2
  out 0xa1, al
  mov al, 1
  out 0x21, al
  out 0xa1, al
  mov al, 0xef
  out 0x21, al
  mov al, 0xff
  out 0xa1, al
  # UART: RX interrupt on, OUT2 gates the line.
  mov dx, 0x3f9
  mov al, 1
  out dx, al
  mov dx, 0x3fc
  mov al, 0x08
  out dx, al
${PRINT("ready")}
  sti
1: hlt
  jmp 1b
handler:
  mov dx, 0x3fd
  in al, dx
  test al, 1
  jz 3f
  mov dx, 0x3f8
  in al, dx
  cmp al, 'q'
  je 4f
  out dx, al
  jmp handler
3: mov al, 0x20
  out 0x20, al
  iretq
spurious:
  iretq
4:${PRINT("bye")}${EXIT(0)}
ready: .asciz "echo ready\\n"
bye: .asciz "\\nbye\\n"
.align 16
idtr: .word 256 * 16 - 1
  .quad idt
.align 16
idt: .fill 256 * 16, 1, 0`);

/** A PVH kernel: a 32-bit entry named by the Xen ELF note, EBX = start info. */
export const pvhKernel = () =>
  assembleElf(`
.section .note.Xen, "a", @note
  .long 4, 8, 18
  .asciz "Xen"
  .quad pvh_entry
.text
.code32
pvh_entry:
  # The start info magic proves EBX points at it.
  cmp dword ptr [ebx], 0x336ec578
  jne 2f
  mov esi, offset pvh_msg
  mov dx, 0x3f8
1: lodsb
  test al, al
  jz 3f
  out dx, al
  jmp 1b
3: mov dx, 0xf4
  mov eax, 0
  out dx, eax
  hlt
2: mov dx, 0xf4
  mov eax, 5
  out dx, eax
  hlt
pvh_msg: .asciz "PVH entry, start info ok\\n"
.code64`);

/** A bzImage whose 64-bit entry checks RSI points at a zero page with "HdrS". */
export function bzImageKernel(): string {
  const elf = assembleElf(
    `
  cmp dword ptr [rsi + 0x202], 0x53726448
  jne 1f
${PRINT("msg")}${EXIT(0)}
1:${EXIT(6)}
msg: .asciz "bzImage 64-bit entry, zero page ok\\n"`,
    0x100200,
  );
  const dir = tmpDir();
  const bin = `${dir}/code.bin`;
  const r = new Deno.Command("objcopy", { args: ["-O", "binary", "-j", ".text", elf, bin] })
    .outputSync();
  if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
  const path = `${dir}/bzImage`;
  Deno.writeFileSync(path, makeBzImage({ code: Deno.readFileSync(bin) }));
  return path;
}

/** Where the SMP guest's application processors start (SIPI vector 0x10). */
const AP_START = 0x10000;

/**
 * BSP code: enables the x2APIC, sends INIT then SIPI twice to all other
 * CPUs (entry at AP_START), and waits until ap_count (a word the APs
 * increment) equals CPUs − 1, read from CPUID.1 EBX[23:16].
 */
const START_APS_AND_WAIT = `
  mov ecx, 0x1b
  rdmsr
  or eax, 0xc00
  wrmsr
  mov ecx, 0x830
  xor edx, edx
  mov eax, 0x000c4500
  wrmsr
  mov eax, 100000
1: dec eax
  jnz 1b
  mov ecx, 0x830
  mov eax, 0x000c4600 | (${AP_START} >> 12)
  wrmsr
  mov eax, 0x000c4600 | (${AP_START} >> 12)
  wrmsr
  mov eax, 1
  cpuid
  shr ebx, 16
  and ebx, 0xff
  dec ebx
2: pause
  movzx eax, word ptr [ap_count]
  cmp eax, ebx
  jne 2b
`;

/**
 * Brings up every AP with INIT-SIPI-SIPI through the in-kernel x2APIC; each
 * AP prints its APIC id (from CPUID) under a spin lock and counts itself in;
 * the BSP waits for all of them and exits 0.
 */
export const smp = () =>
  assembleElf(
    `${START_APS_AND_WAIT}${PRINT("done")}${EXIT(0)}
done: .asciz "all APs up\\n"

.section .ap, "ax"
.code16
ap_start:
  cli
  mov ax, cs
  mov ds, ax
3: mov al, 1
  xchg al, [ap_lock - ap_start]
  test al, al
  jnz 3b
  mov eax, 1
  cpuid
  shr ebx, 24
  mov dx, 0x3f8
  mov al, 'A'
  out dx, al
  mov al, 'P'
  out dx, al
  mov al, ' '
  out dx, al
  mov ax, bx
  mov cl, 10
  div cl
  test al, al
  jz 4f
  add al, '0'
  out dx, al
4: mov al, ah
  add al, '0'
  out dx, al
  mov al, 10
  out dx, al
  mov byte ptr [ap_lock - ap_start], 0
  lock inc word ptr [ap_count - ap_start]
5: hlt
  jmp 5b
ap_lock: .byte 0
.align 2
ap_count: .word 0
`,
    0x200000,
    [`--section-start=.ap=0x${AP_START.toString(16)}`],
  );

/**
 * Executes `cpuid` for each [leaf, subleaf] and prints one line each,
 * `leaf.sub eax ebx ecx edx` in hex, so a test reads what the guest really
 * sees (on PVM that is not the vCPU's table). With `xcr0`, first enables
 * OSXSAVE and loads XCR0 (only when CPUID.1 offers XSAVE, else it prints
 * `no xsave`), then prints `xcr0 <xgetbv>` and the leaves. Exits 0.
 */
export const cpuidProbe = (leaves: Array<[number, number]>, xcr0?: number) =>
  assembleElf(`
  mov dx, 0x3f8
${
    xcr0 === undefined ? "" : `
  mov eax, 1
  cpuid
  bt ecx, 26
  jc 5f
${PRINT("noxsave")}${EXIT(0)}
5: mov rax, cr4
  or rax, 1 << 18
  mov cr4, rax
  xor ecx, ecx
  xor edx, edx
  mov eax, ${xcr0}
  xsetbv
  xor ecx, ecx
  xgetbv
  mov ebx, eax
${PRINT("xcr0")}
  call hex32
  mov al, 10
  out dx, al`
  }
  lea rdi, [rip + leaves]
1: mov eax, [rdi]
  cmp eax, 0xffffffff
  je 2f
  mov ecx, [rdi + 4]
  push rdi
  cpuid
  mov r8d, eax
  mov r9d, ebx
  mov r10d, ecx
  mov r11d, edx
  pop rdi
  mov dx, 0x3f8
  mov ebx, [rdi]
  call hex32
  mov al, '.'
  out dx, al
  mov ebx, [rdi + 4]
  call hex32
  mov ebx, r8d
  call sphex32
  mov ebx, r9d
  call sphex32
  mov ebx, r10d
  call sphex32
  mov ebx, r11d
  call sphex32
  mov al, 10
  out dx, al
  add rdi, 8
  jmp 1b
2:${EXIT(0)}
sphex32:
  mov al, ' '
  out dx, al
hex32:
  mov ecx, 8
3: rol ebx, 4
  mov eax, ebx
  and eax, 0xf
  lea rsi, [rip + digits]
  mov al, [rsi + rax]
  out dx, al
  loop 3b
  ret
digits: .ascii "0123456789abcdef"
noxsave: .asciz "no xsave\\n"
xcr0: .asciz "xcr0 "
.align 4
leaves: ${leaves.map(([l, s]) => `.long ${l}, ${s}`).join("\n  ")}
  .long 0xffffffff, 0
`);

/**
 * Floods the boot-timer port: 5000 single writes, then `rep outsb` of a
 * 4096-byte buffer four times; prints a marker and exits 0. The monitor
 * must mark the guest ready once.
 */
export const bootTimerFlood = () =>
  assembleElf(`
  mov ecx, 5000
1: out 0xf8, al
  loop 1b
  mov r8d, 4
2: lea rsi, [rip + buf]
  mov ecx, 4096
  mov dx, 0xf8
  rep outsb
  dec r8d
  jnz 2b
${PRINT("msg")}${EXIT(0)}
msg: .asciz "flooded\\n"
buf: .fill 4096, 1, 1`);

/** Prints a marker and reports `status` on the exit port. */
export const exitWith = (status: number) =>
  assembleElf(`${PRINT("msg")}${EXIT(status)}
msg: .asciz "exiting\\n"`);

/**
 * Makes 16- and 32-bit accesses to the UART and checks none reaches a
 * register: wide writes to SCR, LCR (DLAB) and THR change nothing and send
 * nothing, wide reads give all-ones and do not pop the RX FIFO (filled
 * through loopback). Prints "serial widths ok" and exits 0, or exits with
 * the number of the first check that failed (11 to 16).
 */
export const serialWidths = () =>
  assembleElf(`
  mov dx, 0x3ff
  mov al, 0x5a
  out dx, al
  mov ax, 0x1234
  out dx, ax
  mov eax, 0x12345678
  out dx, eax
  in al, dx
  cmp al, 0x5a
  mov ebx, 11
  jne 7f
  in ax, dx
  cmp ax, 0xffff
  mov ebx, 12
  jne 7f
  mov dx, 0x3f8
  in eax, dx
  cmp eax, 0xffffffff
  mov ebx, 13
  jne 7f
  # A wide write of THR must transmit nothing, one of LCR must not set DLAB.
  mov ax, 0x4242
  out dx, ax
  mov dx, 0x3fb
  mov ax, 0x0080
  out dx, ax
  # Loopback puts one byte in the RX FIFO; a wide read must leave it there.
  mov dx, 0x3fc
  mov al, 0x18
  out dx, al
  mov dx, 0x3f8
  mov al, 0x41
  out dx, al
  in ax, dx
  cmp ax, 0xffff
  mov ebx, 14
  jne 7f
  mov dx, 0x3fd
  in al, dx
  test al, 1
  mov ebx, 15
  jz 7f
  mov dx, 0x3f8
  in al, dx
  cmp al, 0x41
  mov ebx, 16
  jne 7f
  mov dx, 0x3fc
  mov al, 0x08
  out dx, al
${PRINT("ok")}${EXIT(0)}
7: mov dx, 0xf4
  mov eax, ebx
  out dx, eax
  hlt
ok: .asciz "serial widths ok\\n"`);

/** Prints `text`'s bytes (no NUL among them) on COM1, then exits with 0. */
export const printBytes = (text: string) => {
  const bytes = [...new TextEncoder().encode(text)];
  if (bytes.includes(0)) throw new Error("printBytes: the text holds a NUL");
  return assembleElf(`${PRINT("msg")}${EXIT(0)}
msg: .byte ${[...bytes, 0].join(", ")}`);
};

/** Prints a marker, then a line on COM1 forever: a console flood. */
export const consoleFlood = () =>
  assembleElf(`${PRINT("msg")}
1:${PRINT("line")}
  jmp 1b
msg: .asciz "flooding\\n"
line: .asciz "flood flood flood flood flood flood flood flood flood flood\\n"`);

/**
 * Every AP floods COM1: `perAp` bytes of 'x' to THR, each followed by an LSR
 * and a scratch-register access, with no lock; the BSP counts them in and
 * exits 0. Serial contention from every vCPU at once.
 */
export const smpSerialFlood = (perAp: number) =>
  assembleElf(
    `${START_APS_AND_WAIT}${PRINT("done")}${EXIT(0)}
done: .asciz "\\nall APs flooded\\n"

.section .ap, "ax"
.code16
ap_start:
  cli
  mov ax, cs
  mov ds, ax
  mov cx, ${perAp}
3: mov dx, 0x3f8
  mov al, 'x'
  out dx, al
  mov dx, 0x3fd
  in al, dx
  mov dx, 0x3ff
  out dx, al
  loop 3b
  lock inc word ptr [ap_count - ap_start]
5: hlt
  jmp 5b
.align 2
ap_count: .word 0
`,
    0x200000,
    [`--section-start=.ap=0x${AP_START.toString(16)}`],
  );

/**
 * Writes every UART register with values from a xorshift sequence (DLAB
 * on and off, FIFO resets, loopback, interrupts enabled with no IDT: the
 * PIC is left masked) and reads each back, `rounds` times, then prints a
 * marker and exits 0. The UART's state machine under garbage.
 */
export const serialGarbage = (rounds: number) =>
  assembleElf(`
  mov al, 0xff
  out 0x21, al
  out 0xa1, al
  mov ebx, 0x2545f491
  mov ecx, ${rounds}
1: mov edx, 0x3f8
2: mov eax, ebx
  shl eax, 13
  xor ebx, eax
  mov eax, ebx
  shr eax, 17
  xor ebx, eax
  mov eax, ebx
  shl eax, 5
  xor ebx, eax
  mov eax, ebx
  out dx, al
  in al, dx
  inc edx
  cmp edx, 0x400
  jne 2b
  loop 1b
  mov dx, 0x3fb
  mov al, 0x03
  out dx, al
  mov dx, 0x3fc
  xor al, al
  out dx, al
${PRINT("msg")}${EXIT(0)}
msg: .asciz "\\nserial garbage survived\\n"`);

/**
 * Sends the i8042 xorshift garbage on its command (0x64) and data (0x60)
 * ports, skipping the reset pulse (0xfe) and the output-port write (0xd1)
 * so the guest runs to its end; reads status and data after each. Prints a
 * marker and exits 0.
 */
export const i8042Garbage = (rounds: number) =>
  assembleElf(`
  mov ebx, 0x1b873593
  mov ecx, ${rounds}
1: mov eax, ebx
  shl eax, 13
  xor ebx, eax
  mov eax, ebx
  shr eax, 17
  xor ebx, eax
  mov eax, ebx
  shl eax, 5
  xor ebx, eax
  mov eax, ebx
  cmp al, 0xfe
  je 2f
  cmp al, 0xd1
  je 2f
  out 0x64, al
2: in al, 0x64
  mov al, ah
  out 0x60, al
  in al, 0x60
  loop 1b
${PRINT("msg")}${EXIT(0)}
msg: .asciz "i8042 garbage survived\\n"`);

/**
 * Floods the POST, serial and an unclaimed port and unbacked MMIO, then
 * faults with no IDT in the middle of it: a triple fault mid-flood.
 */
export const tripleFaultMidFlood = () =>
  assembleElf(`
  mov rdi, 0x30000000
  mov ecx, 20000
1: out 0x80, al
  mov dx, 0x3f8
  mov al, '.'
  out dx, al
  mov dx, 0x2345
  in al, dx
  mov dword ptr [rdi], ecx
  cmp ecx, 10000
  je 2f
  loop 1b
2: ud2`);

/**
 * Exit-port garbage: writes of every width to the port's other offsets
 * (0xf5..0xf7, ignored) and a read, then status 200 (outside the range
 * that passes through).
 */
export const exitPortGarbage = () =>
  assembleElf(`
  mov dx, 0xf5
  mov al, 3
  out dx, al
  mov ax, 5
  out dx, ax
  mov dx, 0xf7
  mov al, 9
  out dx, al
  mov dx, 0xf4
  in eax, dx
${PRINT("msg")}
  mov dx, 0xf4
  mov eax, 200
  out dx, eax
  hlt
msg: .asciz "exit garbage sent\n"`);

/** Guest-physical address of {@linkcode counter}'s 64-bit count. */
export const COUNTER_ADDR = 0x300000;

/**
 * Prints "counting", then adds one to the 64-bit word at
 * {@linkcode COUNTER_ADDR} for ever: a guest whose progress the host reads
 * from guest RAM (pause and resume tests).
 */
export const counter = () =>
  assembleElf(`${PRINT("msg")}
  mov rdi, ${COUNTER_ADDR}
1: inc qword ptr [rdi]
  jmp 1b
msg: .asciz "counting\\n"`);

/** Prints the low nibble of al as a hex digit on COM1 (clobbers al, dx). */
const HEX_NIBBLE = `
  and al, 0xf
  cmp al, 10
  jb 2f
  add al, 0x57
  jmp 3f
2: add al, 0x30
3: mov dx, 0x3f8
  out dx, al`;

/**
 * Prints "keys?", then reads `count` bytes from the i8042's data port as
 * they arrive (polling the status port's output-full bit) and prints each
 * in hex with a space after it, then exits 0: what the host's key presses
 * look like to a guest.
 */
export const keyReader = (count: number) =>
  assembleElf(`${PRINT("msg")}
  mov ecx, ${count}
1: in al, 0x64
  test al, 1
  jz 1b
  in al, 0x60
  mov bl, al
  shr al, 4${HEX_NIBBLE}
  mov al, bl${HEX_NIBBLE}
  mov al, 0x20
  out dx, al
  dec ecx
  jnz 1b${EXIT(0)}
msg: .asciz "keys?\\n"`);

/**
 * Checks the ACPI root pointer's signature at 0xe0000, writes garbage to
 * the ACPI registers at 0x600-0x603 (every width, sleep types without
 * SLP_EN, SLP_EN with S3, wrong reset values, reads), then powers off
 * (SLP_TYP 5 | SLP_EN) or resets (the reset value) as `action` says.
 */
export const acpiPower = (action: "off" | "reset") =>
  assembleElf(`
  mov rax, [0xe0000]
  mov rbx, 0x2052545020445352
  cmp rax, rbx
  jne 1f
${PRINT("ok")}
  mov dx, 0x600
  mov ecx, 8
3: mov al, cl
  shl al, 2
  out dx, al
  loop 3b
  mov al, 0x2c
  out dx, al
  mov ax, 0x1c1c
  out dx, ax
  in eax, dx
  mov dx, 0x601
  mov al, 0xff
  out dx, al
  in al, dx
  mov dx, 0x602
  mov al, 0xfe
  out dx, al
  xor al, al
  out dx, al
  mov eax, 0xffffff00
  out dx, eax
  mov dx, 0x603
  mov al, 1
  out dx, al
  in al, dx
${PRINT("garbage")}
  ${action === "off" ? "mov dx, 0x600\n  mov al, 0x34" : "mov dx, 0x602\n  mov al, 1"}
  out dx, al
  hlt
${PRINT("still")}${EXIT(9)}
1:${PRINT("bad")}${EXIT(1)}
ok: .asciz "rsdp found\\n"
garbage: .asciz "garbage written\\n"
still: .asciz "still running\\n"
bad: .asciz "no rsdp at 0xe0000\\n"`);
