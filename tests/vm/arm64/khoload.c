/*
 * khoload: the arm64 capture guest's only non-busybox tool (tests/vm/arm64/make-captures).
 *
 *   khoload load KERNEL INITRD|none CMDLINE_FILE ERRNO_FILE
 *       kexec_file_load(KERNEL, INITRD, cmdline) with KEXEC_FILE_DEBUG (plus
 *       KEXEC_FILE_NO_INITRAMFS for "none"), so the kernel logs its own placement
 *       ("kexec_file: segment[N]: ... mem=... memsz=..."). CMDLINE_FILE is passed as is (no
 *       trailing newline); the length given to the syscall counts the terminating NUL, as
 *       kexec-tools does. Writes the errno (0 on success) to ERRNO_FILE.
 *   khoload exec
 *       reboot(LINUX_REBOOT_CMD_KEXEC) into the loaded kernel.
 *
 * Built static with aarch64-linux-gnu-gcc; no libc wrapper exists for kexec_file_load, so it
 * goes through syscall(2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef KEXEC_FILE_NO_INITRAMFS
#define KEXEC_FILE_NO_INITRAMFS 0x00000004
#endif
#ifndef KEXEC_FILE_DEBUG
#define KEXEC_FILE_DEBUG 0x00000008
#endif

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!f) {
		perror(path);
		exit(2);
	}
	do {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			if (!buf)
				exit(2);
		}
		got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
	} while (got > 0);
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "exec") == 0) {
		sync();
		reboot(LINUX_REBOOT_CMD_KEXEC);
		perror("reboot(LINUX_REBOOT_CMD_KEXEC)");
		return 1;
	}
	if (argc != 6 || strcmp(argv[1], "load") != 0) {
		fprintf(stderr, "usage: khoload load KERNEL INITRD|none CMDLINE_FILE ERRNO_FILE\n"
				"       khoload exec\n");
		return 2;
	}
	unsigned long flags = KEXEC_FILE_DEBUG;
	int kernel_fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	int initrd_fd = -1;
	if (kernel_fd < 0) {
		perror(argv[2]);
		return 2;
	}
	if (strcmp(argv[3], "none") == 0) {
		flags |= KEXEC_FILE_NO_INITRAMFS;
	} else {
		initrd_fd = open(argv[3], O_RDONLY | O_CLOEXEC);
		if (initrd_fd < 0) {
			perror(argv[3]);
			return 2;
		}
	}
	size_t len;
	char *cmdline = read_all(argv[4], &len);
	long rc = syscall(SYS_kexec_file_load, kernel_fd, initrd_fd, len + 1, cmdline, flags);
	int err = rc == 0 ? 0 : errno;
	FILE *out = fopen(argv[5], "w");
	if (!out) {
		perror(argv[5]);
		return 2;
	}
	fprintf(out, "%d\n", err);
	fclose(out);
	printf("kexec_file_load: %s (errno %d)\n", err ? strerror(err) : "loaded", err);
	return err ? 1 : 0;
}
