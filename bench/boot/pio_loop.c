/*
 * The C baseline for PIO exit handling: a minimal KVM runner whose guest
 * (real mode, 16 bytes) writes port 0x80 N times, then halts. It handles
 * each KVM_EXIT_IO by reading the access like a device would and prints
 * {"exits": N, "seconds": S} measured around the run loop.
 *
 * Build: cc -O2 -o pio_loop pio_loop.c    Run: ./pio_loop 100000
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

static int must(int r, const char *what) {
	if (r < 0) {
		perror(what);
		exit(1);
	}
	return r;
}

int main(int argc, char **argv) {
	uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], 0, 10) : 100000;
	int kvm = must(open("/dev/kvm", O_RDWR | O_CLOEXEC), "open /dev/kvm");
	int vm = must(ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM");
	size_t memsz = 0x10000;
	uint8_t *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) return perror("mmap"), 1;
	/* mov ecx, n; 1: out 0x80, al; dec ecx; jnz 1b; hlt */
	uint8_t code[] = {0x66, 0xb9, 0, 0, 0, 0, 0xe6, 0x80, 0x66, 0x49, 0x75, 0xfa, 0xf4};
	memcpy(code + 2, &n, 4);
	memcpy(mem + 0x1000, code, sizeof code);
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (uintptr_t)mem,
	};
	must(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region), "KVM_SET_USER_MEMORY_REGION");
	int vcpu = must(ioctl(vm, KVM_CREATE_VCPU, 0), "KVM_CREATE_VCPU");
	int runsz = must(ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED) return perror("mmap kvm_run"), 1;
	struct kvm_sregs sregs;
	must(ioctl(vcpu, KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	must(ioctl(vcpu, KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
	must(ioctl(vcpu, KVM_SET_REGS, &regs), "KVM_SET_REGS");

	struct timespec t0, t1;
	uint64_t exits = 0, sum = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		must(ioctl(vcpu, KVM_RUN, 0), "KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO) {
			exits++;
			sum += run->io.port + ((uint8_t *)run)[run->io.data_offset];
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT) break;
		fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("{\"exits\": %llu, \"seconds\": %.6f, \"check\": %llu}\n", (unsigned long long)exits, s,
	       (unsigned long long)sum);
	return 0;
}
