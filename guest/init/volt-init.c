/*
 * volt-init: PID 1 for Volt microVM guests (initramfs /init).
 *
 * Build (Debian: apt-get install musl-tools):
 *   musl-gcc -static -Os -s -Wall -Wextra -o volt-init volt-init.c
 *
 * Mounts /proc /sys /dev /tmp, prints "VOLT VM READY uptime=<s>s" on the
 * console, tells the monitor it is ready (outb 1 -> port 0xf8), runs the
 * command the kernel command line asks for, reaps every zombie meanwhile,
 * and reports the command's exit status to the monitor (outl -> port 0xf4)
 * before rebooting (the monitor turns the reset into a stop). Busybox's
 * poweroff and halt stop the VM with status 0, its reboot resets it.
 *
 * With a vsock device, a child serves `volt exec` on vsock port 10000: per
 * connection it runs one command (pipes, or a pty with -t) and streams its
 * stdin, stdout, stderr and exit status in frames (see README.md).
 *
 * Kernel command line keys (see README.md):
 *   volt.cmd="..."      run with /bin/sh -c
 *   volt.hostname=NAME  hostname (default "volt")
 *   volt.exit           no command: stop right away with status 0
 *   -- PROG ARGS...     run PROG directly (when no volt.cmd)
 * With none of these: interactive /bin/sh if present.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define PORT_EXIT  0xf4 /* 32-bit write: exit status, monitor stops the VM */
#define PORT_READY 0xf8 /* 8-bit write: boot-timer "guest ready" marker */

static int have_ports;

/* A stop asked of PID 1: Ctrl-Alt-Del (the monitor's SendCtrlAltDel;
 * with RB_DISABLE_CAD the kernel sends SIGINT instead of rebooting at
 * once), or busybox's halt (SIGUSR1), poweroff (SIGUSR2) and reboot
 * (SIGTERM). */
static volatile sig_atomic_t stop_signal;

static void on_stop(int sig)
{
	stop_signal = sig;
}


/* From linux/vm_sockets.h, which musl does not ship. */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xffffffffU
struct sockaddr_vm {
	sa_family_t svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_zero[4];
};

#define EXEC_PORT 10000
#define FRAME_MAX 65536 /* payload bytes of one frame, both ways */
/* Frames: type (1 byte), payload length (4 bytes, little-endian), payload.
 * Host to guest: 'R' run (flags, rows, cols, argv NUL-separated), 'I'
 * stdin bytes, 'E' end of stdin, 'W' window size (rows, cols).
 * Guest to host: 'O' stdout, 'e' stderr, 'X' exit status (4 bytes). */

static void warn(const char *what, const char *arg)
{
	dprintf(2, "volt-init: %s %s: %s\n", what, arg, strerror(errno));
}

static void mount_fs(const char *type, const char *dir, unsigned long flags,
		     const char *data)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		warn("mkdir failed", dir);
	/* EBUSY: already mounted (e.g. the kernel's devtmpfs automount). */
	if (mount(type, dir, type, flags, data) < 0 && errno != EBUSY)
		warn("mount failed", dir);
}

/* The kernel only gives init a console if /dev/console exists in the
 * initramfs; otherwise fds 0-2 are closed until we open it ourselves. */
static void setup_console(void)
{
	int fd = -1;
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) >= 0)
			continue;
		if (fd < 0)
			fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd < 0)
			return;
		if (fd != i)
			dup2(fd, i);
	}
	if (fd > 2)
		close(fd);
}

static int read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return n > 0;
}

/*
 * Take the next word of the command line, in place, exactly as the kernel's
 * next_arg() (lib/cmdline.c) does, so that we agree with it on what the
 * words are: spaces separate words except inside double quotes; a quote
 * opening the word or its value is dropped with the word's last quote.
 * *val points after the first '=' (NULL if none).
 */
static char *next_word(char **cursor, char **val)
{
	char *args = *cursor, *param;
	int i, equals = 0, in_quote = 0, quoted = 0;

	while (*args == ' ' || *args == '\t' || *args == '\n')
		args++;
	if (!*args)
		return NULL;
	if (*args == '"') {
		args++;
		in_quote = quoted = 1;
	}
	for (i = 0; args[i]; i++) {
		if ((args[i] == ' ' || args[i] == '\t' || args[i] == '\n') && !in_quote)
			break;
		if (!equals && args[i] == '=')
			equals = i;
		if (args[i] == '"')
			in_quote = !in_quote;
	}
	param = args;
	*val = NULL;
	if (equals) {
		args[equals] = '\0';
		*val = args + equals + 1;
		if (**val == '"') {
			(*val)++;
			if (args[i - 1] == '"')
				args[i - 1] = '\0';
		}
	}
	if (quoted && i > 0 && args[i - 1] == '"')
		args[i - 1] = '\0';
	*cursor = args[i] ? args + i + 1 : args + i;
	if (args[i])
		args[i] = '\0';
	return param;
}

struct cmdline {
	char *cmd;       /* volt.cmd= */
	char *hostname;  /* volt.hostname= */
	int exit_now;    /* volt.exit */
	int init_args;   /* words after "--": the kernel hands them to us as argv */
};

static void parse_cmdline(char *buf, struct cmdline *c)
{
	char *cursor = buf, *word, *val;
	int after_dashes = 0;

	while ((word = next_word(&cursor, &val))) {
		if (after_dashes)
			c->init_args++;
		else if (!strcmp(word, "--") && !val)
			after_dashes = 1;
		else if (!strcmp(word, "volt.cmd") && val)
			c->cmd = val;
		else if (!strcmp(word, "volt.hostname") && val && *val)
			c->hostname = val;
		else if (!strcmp(word, "volt.exit"))
			c->exit_now = !val || strcmp(val, "0");
	}
}

/* Kernel modules the initramfs carries (Debian's kernel: virtio-mmio and
 * the devices), loaded in the order the host wrote, before READY. */
#define MODULE_DIR "/lib/modules/volt"
static void load_modules(void)
{
	static char list[8192];
	if (!read_file(MODULE_DIR "/order", list, sizeof list))
		return;
	for (char *save = NULL, *name = strtok_r(list, "\n", &save); name;
	     name = strtok_r(NULL, "\n", &save)) {
		char path[256];
		snprintf(path, sizeof path, MODULE_DIR "/%s", name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			warn("cannot open module", path);
			continue;
		}
		if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
			warn("cannot load module", name);
		close(fd);
	}
}

static void print_ready(void)
{
	char up[64], line[96];
	if (!read_file("/proc/uptime", up, sizeof up))
		strcpy(up, "?");
	up[strcspn(up, " \n")] = '\0';
	snprintf(line, sizeof line, "VOLT VM READY uptime=%ss\n", up);
	if (write(1, line, strlen(line)) < 0)
		return;
}

static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();
	if (pid != 0) {
		if (pid < 0)
			warn("fork failed", argv[0]);
		return pid;
	}
	/* Own session with the console as controlling tty, so ^C reaches
	 * the command and a shell gets job control. */
	setsid();
	ioctl(0, TIOCSCTTY, 1);
	execvp(argv[0], argv);
	int err = errno;
	warn("cannot run", argv[0]);
	_exit(err == ENOENT ? 127 : 126);
}

/* Wait for the main child, reaping every orphan re-parented to PID 1. */
static int wait_for(pid_t main_pid)
{
	int status;
	for (;;) {
		pid_t pid = waitpid(-1, &status, 0);
		if (pid == main_pid)
			break;
		if (pid < 0 && errno == EINTR && stop_signal)
			return -1;
		if (pid < 0 && errno != EINTR)
			return 255;
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* Reads exactly n bytes; 0 at EOF or error. */
static int read_all(int fd, void *buf, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		got += (size_t)r;
	}
	return 1;
}

static int write_all(int fd, const void *buf, size_t n)
{
	for (size_t put = 0; put < n;) {
		ssize_t w = write(fd, (const char *)buf + put, n - put);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return 0;
		put += (size_t)w;
	}
	return 1;
}

static int send_frame(int sock, char type, const void *data, uint32_t len)
{
	unsigned char h[5] = { (unsigned char)type, len & 0xff, (len >> 8) & 0xff,
			       (len >> 16) & 0xff, len >> 24 };
	return write_all(sock, h, 5) && write_all(sock, data, len);
}

/* Next frame's type and payload (into buf, FRAME_MAX bytes); -1 at EOF or a bad frame. */
static int read_frame(int sock, unsigned char *buf, uint32_t *len)
{
	unsigned char h[5];
	if (!read_all(sock, h, 5))
		return -1;
	*len = h[1] | h[2] << 8 | h[3] << 16 | (uint32_t)h[4] << 24;
	if (*len > FRAME_MAX || !read_all(sock, buf, *len))
		return -1;
	return h[0];
}

static void set_winsize(int fd, const unsigned char *p)
{
	struct winsize ws = { .ws_row = p[0] | p[1] << 8, .ws_col = p[2] | p[3] << 8 };
	ioctl(fd, TIOCSWINSZ, &ws);
}

/* One `volt exec`: runs the command the 'R' frame names and relays it. */
static void exec_one(int sock)
{
	static unsigned char buf[FRAME_MAX + 1], in[FRAME_MAX];
	static char *argv[256];
	uint32_t len, in_len = 0, in_off = 0;
	if (read_frame(sock, buf, &len) != 'R' || len < 6)
		_exit(1);
	int tty = buf[0] & 1, argc = 0;
	buf[len] = '\0';
	for (uint32_t at = 5; at < len && argc < 255; at += strlen((char *)buf + at) + 1)
		argv[argc++] = (char *)buf + at;
	argv[argc] = NULL;
	if (!argc)
		_exit(1);
	int io[3][2], master = -1;
	if (tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY);
		if (master < 0 || grantpt(master) || unlockpt(master)) {
			const char *m = "volt exec: no terminal in the guest (devpts)\n";
			send_frame(sock, 'e', m, strlen(m));
			int st = 126;
			send_frame(sock, 'X', &st, 4);
			_exit(0);
		}
		set_winsize(master, buf + 1);
	} else {
		for (int i = 0; i < 3; i++)
			if (pipe2(io[i], O_CLOEXEC) < 0)
				_exit(1);
	}
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		if (tty) {
			int slave = open(ptsname(master), O_RDWR);
			ioctl(slave, TIOCSCTTY, 0);
			for (int i = 0; i < 3; i++)
				dup2(slave, i);
		} else {
			dup2(io[0][0], 0);
			dup2(io[1][1], 1);
			dup2(io[2][1], 2);
		}
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		int err = errno;
		dprintf(2, "volt exec: cannot run %s: %s\n", argv[0], strerror(err));
		_exit(err == ENOENT ? 127 : 126);
	}
	int to_child = tty ? master : io[0][1];
	int from[2] = { tty ? master : io[1][0], tty ? -1 : io[2][0] };
	if (!tty) {
		close(io[0][0]);
		close(io[1][1]);
		close(io[2][1]);
	}
	fcntl(to_child, F_SETFL, O_NONBLOCK);
	int stdin_done = 0, status = 255;
	while (from[0] >= 0 || from[1] >= 0) {
		struct pollfd p[4] = {
			/* No more from the host while its last bytes wait for the command. */
			{ .fd = in_len || stdin_done < 0 ? -1 : sock, .events = POLLIN },
			{ .fd = from[0], .events = POLLIN },
			{ .fd = from[1], .events = POLLIN },
			{ .fd = in_len ? to_child : -1, .events = POLLOUT },
		};
		if (poll(p, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents) {
			int t = read_frame(sock, buf, &len);
			if (t < 0) {
				/* The host went away: so does the command. */
				kill(-pid, SIGHUP);
				kill(pid, SIGKILL);
				stdin_done = -1;
			} else if (t == 'I' && !stdin_done) {
				memcpy(in, buf, len);
				in_len = len;
				in_off = 0;
			} else if (t == 'E' && !stdin_done) {
				stdin_done = 1;
				if (!tty)
					close(to_child);
				else
					write_all(master, "\004", 1);
			} else if (t == 'W' && tty && len >= 4) {
				set_winsize(master, buf);
			}
		}
		if (p[3].revents) {
			ssize_t w = write(to_child, in + in_off, in_len - in_off);
			if (w > 0)
				in_off += (uint32_t)w;
			if (w < 0 && errno != EAGAIN)
				in_off = in_len; /* The command closed its stdin: drop the rest. */
			if (in_off == in_len)
				in_len = 0;
		}
		for (int k = 0; k < 2; k++) {
			if (from[k] < 0 || !p[1 + k].revents)
				continue;
			ssize_t r = read(from[k], buf, FRAME_MAX);
			if (r > 0 && send_frame(sock, k ? 'e' : 'O', buf, (uint32_t)r))
				continue;
			if (r < 0 && errno == EINTR)
				continue;
			/* EOF (a pty says EIO once the command is gone). */
			close(from[k]);
			from[k] = -1;
		}
	}
	int st;
	if (waitpid(pid, &st, 0) == pid)
		status = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
	send_frame(sock, 'X', &status, 4);
	_exit(0);
}

/* The exec agent: a child of PID 1 that accepts `volt exec` connections. */
static void start_exec_agent(void)
{
	int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_port = EXEC_PORT,
				    .svm_cid = VMADDR_CID_ANY };
	if (s < 0)
		return; /* No vsock in this kernel. */
	if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
		close(s);
		return;
	}
	pid_t pid = fork();
	if (pid != 0) {
		close(s);
		return;
	}
	signal(SIGCHLD, SIG_IGN); /* Connection handlers reap themselves. */
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		if (fork() == 0) {
			close(s);
			signal(SIGCHLD, SIG_DFL);
			exec_one(c);
		}
		close(c);
	}
}

/* PID 1 must never exit (the kernel panics), so this does not return. */
static void stop_vm(int status)
{
	/* The console's last lines (the Ctrl-Alt-Del message) may still be in
	 * the UART driver's buffer: the exit port would end the VM first. */
	tcdrain(1);
	tcdrain(2);
	sync();
	if (have_ports)
		outl((unsigned)status & 0xff, PORT_EXIT);
	/* Monitors without the exit port: the reset (ACPI's register or the
	 * i8042's line) is a stop to the monitor. */
	reboot(RB_AUTOBOOT);
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

/* Every process asked to end, then made to. */
static void end_processes(void)
{
	kill(-1, SIGTERM);
	for (int i = 0; i < 20; i++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (kill(-1, 0) < 0 && errno == ESRCH)
			break;
		usleep(50000);
	}
	kill(-1, SIGKILL);
}

/* Ctrl-Alt-Del, halt, poweroff: a clean stop (status 0). */
static void power_off_cleanly(void)
{
	dprintf(2, "volt-init: %spowering off\n", stop_signal == SIGINT ? "Ctrl-Alt-Del: " : "");
	tcdrain(2);
	end_processes();
	stop_vm(0);
}

/* reboot: the kernel restarts the machine, which the monitor reports as a reset. */
static void reboot_cleanly(void)
{
	dprintf(2, "volt-init: rebooting\n");
	tcdrain(2);
	end_processes();
	tcdrain(1);
	tcdrain(2);
	sync();
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	static char buf[4096];
	struct cmdline c = { 0 };

	mount_fs("devtmpfs", "/dev", MS_NOSUID, "mode=0755");
	setup_console();
	mount_fs("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_fs("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620");

	if (read_file("/proc/cmdline", buf, sizeof buf))
		parse_cmdline(buf, &c);
	const char *host = c.hostname ? c.hostname : "volt";
	if (sethostname(host, strlen(host)) < 0)
		warn("sethostname failed", host);
	setenv("PATH", "/sbin:/usr/sbin:/bin:/usr/bin", 0);

	load_modules();
	print_ready();
	/* Without port access (kernel built without X86_IOPL_IOPERM) an out
	 * would fault and kill PID 1: only touch ports once ioperm succeeded. */
	have_ports = ioperm(PORT_EXIT, 8, 1) == 0;
	if (have_ports)
		outb(1, PORT_READY);
	else
		warn("ioperm failed, no ready/exit ports:", "0xf4-0xfb");

	/* Installed before any child: they reset them at exec, and only PID 1 gets the kernel's SIGINT. */
	struct sigaction stop = { .sa_handler = on_stop };
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGUSR1, &stop, NULL);
	sigaction(SIGUSR2, &stop, NULL);
	sigaction(SIGTERM, &stop, NULL);
	reboot(RB_DISABLE_CAD);

	start_exec_agent();
	pid_t pid = -1;
	if (c.cmd) {
		char *sh[] = { "/bin/sh", "-c", c.cmd, NULL };
		pid = spawn(sh);
	} else if (c.init_args > 0 && c.init_args < argc) {
		/* Unknown bare kernel parameters also land in argv before the
		 * "--" words: take only the trailing ones. */
		pid = spawn(argv + argc - c.init_args);
	} else if (c.exit_now) {
		stop_vm(0);
	} else if (access("/bin/sh", X_OK) == 0) {
		char *sh[] = { "/bin/sh", NULL };
		pid = spawn(sh);
	} else {
		dprintf(2, "volt-init: nothing to run (no volt.cmd, no -- args, no /bin/sh)\n");
		stop_vm(0);
	}
	int status = pid < 0 ? 255 : wait_for(pid);
	if (status == -1 && stop_signal == SIGTERM)
		reboot_cleanly();
	if (status == -1)
		power_off_cleanly();
	stop_vm(status);
	return 0;
}
