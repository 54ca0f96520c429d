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
 * before rebooting (reboot=k: the monitor turns the i8042 reset into a stop).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PORT_EXIT  0xf4 /* 32-bit write: exit status, monitor stops the VM */
#define PORT_READY 0xf8 /* 8-bit write: boot-timer "guest ready" marker */

static int have_ports;

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
		if (pid < 0 && errno != EINTR)
			return 255;
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* PID 1 must never exit (the kernel panics), so this does not return. */
static void stop_vm(int status)
{
	sync();
	if (have_ports)
		outl((unsigned)status & 0xff, PORT_EXIT);
	/* Monitors without the exit port: reboot=k resets through the i8042,
	 * which the monitor turns into a stop. */
	reboot(RB_AUTOBOOT);
	reboot(RB_POWER_OFF);
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

	if (read_file("/proc/cmdline", buf, sizeof buf))
		parse_cmdline(buf, &c);
	const char *host = c.hostname ? c.hostname : "volt";
	if (sethostname(host, strlen(host)) < 0)
		warn("sethostname failed", host);
	setenv("PATH", "/sbin:/usr/sbin:/bin:/usr/bin", 0);

	print_ready();
	/* Without port access (kernel built without X86_IOPL_IOPERM) an out
	 * would fault and kill PID 1: only touch ports once ioperm succeeded. */
	have_ports = ioperm(PORT_EXIT, 8, 1) == 0;
	if (have_ports)
		outb(1, PORT_READY);
	else
		warn("ioperm failed, no ready/exit ports:", "0xf4-0xfb");

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
	stop_vm(pid < 0 ? 255 : wait_for(pid));
	return 0;
}
