/*
 * volt-blkbench DEVICE: the block benchmark's guest side, run the same way
 * under Volt and QEMU. With O_DIRECT (no guest page cache), one request at
 * a time (queue depth 1):
 *   seq-read   256 MiB in 1 MiB reads          -> "seq-read-mibs N"
 *   seq-write  256 MiB in 1 MiB writes          -> "seq-write-mibs N"
 *   rand-read  4 KiB reads at random offsets, 10 s -> "rand-read-iops N"
 * then, buffered, 64 MiB written through the page cache and one sync()
 *                                              -> "sync-ms N"
 * and "blkbench done". The device must hold at least 256 MiB.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024L * 1024L)
#define SEQ_BYTES (256L * MIB)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static double seq(int fd, char *buf, int write_)
{
	double t0 = now();
	for (long off = 0; off < SEQ_BYTES; off += MIB) {
		ssize_t n = write_ ? pwrite(fd, buf, MIB, off) : pread(fd, buf, MIB, off);
		if (n != MIB)
			die(write_ ? "pwrite" : "pread");
	}
	return (SEQ_BYTES / MIB) / (now() - t0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: volt-blkbench DEVICE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0)
		die("open");
	char *buf;
	if (posix_memalign((void **)&buf, 4096, MIB))
		die("posix_memalign");
	memset(buf, 0x5a, MIB);
	printf("seq-write-mibs %.1f\n", seq(fd, buf, 1));
	printf("seq-read-mibs %.1f\n", seq(fd, buf, 0));

	unsigned long x = 88172645463325252UL, blocks = SEQ_BYTES / 4096, n = 0;
	double t0 = now(), t;
	do {
		for (int i = 0; i < 64; i++, n++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			if (pread(fd, buf, 4096, (off_t)(x % blocks) * 4096) != 4096)
				die("pread 4k");
		}
		t = now() - t0;
		/* A heartbeat on the console: a run that never ends shows
		 * whether its requests or its clock stopped. */
		if (n % 512 == 0)
			fprintf(stderr, "hb %lu %.2f\n", n, t);
	} while (t < 10.0);
	printf("rand-read-iops %.0f\n", n / t);
	close(fd);

	fd = open(argv[1], O_WRONLY);
	if (fd < 0)
		die("open buffered");
	for (long off = 0; off < 64 * MIB; off += MIB)
		if (pwrite(fd, buf, MIB, off) != MIB)
			die("pwrite buffered");
	t0 = now();
	sync();
	printf("sync-ms %.1f\n", (now() - t0) * 1000);
	printf("blkbench done\n");
	return 0;
}
