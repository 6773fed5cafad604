/*
 * Keeps max-file generations of a container log written by conmon 2.1.6.
 *
 * conmon rotates its k8s-file log by opening "<log>.tmp" and rename()-ing it over "<log>",
 * which drops the old content. Preloaded into conmon (LD_PRELOAD), this wraps rename(): when
 * the call is exactly that rotation, it first shifts the generations the way Docker's
 * json-file driver does (<log>.N-2 -> <log>.N-1 ... <log>.1 -> <log>.2, the oldest dropped)
 * and hard-links the live log as <log>.1, so the inode conmon is about to replace survives.
 * It runs inside conmon, synchronously, at the moment of rotation: no extra process and no
 * window in which a rotation can be missed.
 *
 * Configuration (read once, then removed from the environment so conmon's children, the
 * OCI runtime and the exit command, neither load this library nor see the settings):
 *   ISOBOX_LOGROT_PATH   the log path exactly as given to conmon's -l k8s-file:PATH
 *   ISOBOX_LOGROT_FILES  max-file (>= 2; otherwise the library does nothing)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char log_path[PATH_MAX];
static char tmp_path[PATH_MAX];
static long max_file;

typedef int (*rename_fn)(const char *, const char *);

__attribute__((constructor)) static void logrot_init(void)
{
	const char *path = getenv("ISOBOX_LOGROT_PATH");
	const char *files = getenv("ISOBOX_LOGROT_FILES");

	if (path && files && path[0] == '/') {
		char *end = NULL;
		long n = strtol(files, &end, 10);
		int a = snprintf(log_path, sizeof log_path, "%s", path);
		int b = snprintf(tmp_path, sizeof tmp_path, "%s.tmp", path);
		if (end && *end == '\0' && n >= 2 && n <= 1000000 && a > 0 && b > 0 &&
		    (size_t)b < sizeof tmp_path)
			max_file = n;
	}
	unsetenv("LD_PRELOAD");
	unsetenv("ISOBOX_LOGROT_PATH");
	unsetenv("ISOBOX_LOGROT_FILES");
	unsetenv("ISOBOX_LOGROT_PRELOAD");
}

static int gen_name(char *buf, size_t len, long k)
{
	int n = snprintf(buf, len, "%s.%ld", log_path, k);
	return n > 0 && (size_t)n < len;
}

/* <log>.k -> <log>.k+1 for k = max_file-2 .. 1 (the oldest is replaced), then <log> -> <log>.1 */
static void shift_generations(rename_fn real_rename)
{
	char from[PATH_MAX], to[PATH_MAX];

	if (max_file == 2) {
		if (gen_name(to, sizeof to, 1))
			unlink(to);
	} else {
		for (long k = max_file - 2; k >= 1; k--) {
			if (!gen_name(from, sizeof from, k) || !gen_name(to, sizeof to, k + 1))
				return;
			if (real_rename(from, to) < 0 && errno == ENOENT)
				unlink(to); /* a gap: keep the numbering dense */
		}
	}
	if (!gen_name(to, sizeof to, 1))
		return;
	if (link(log_path, to) < 0 && errno == EEXIST) {
		unlink(to);
		link(log_path, to);
	}
}

int rename(const char *oldpath, const char *newpath)
{
	static rename_fn real_rename;
	int saved;

	if (!real_rename)
		real_rename = (rename_fn)dlsym(RTLD_NEXT, "rename");
	if (!real_rename) {
		errno = ENOSYS;
		return -1;
	}
	if (max_file >= 2 && oldpath && newpath && strcmp(oldpath, tmp_path) == 0 &&
	    strcmp(newpath, log_path) == 0) {
		saved = errno;
		shift_generations(real_rename);
		errno = saved;
	}
	return real_rename(oldpath, newpath);
}
