/*
 * crasher: the workload of the image coredog.test/crasher:v1 (built by
 * `make images`, hack/images). It dumps core on purpose so that the real-node
 * suite has a container whose crashes CoreDog must capture.
 *
 * It raises its own RLIMIT_CORE (to unlimited when it may, else the soft
 * limit to the hard one), so the container runtime's default of 0 does not
 * stop the kernel from writing the core, then dies of SIGSEGV by writing to
 * address 0.
 *
 * Options (a flag wins over its environment variable):
 *   --delay=SECONDS  CRASHER_DELAY  sleep this long before crashing (0)
 *   --write=PATH     CRASHER_WRITE  first write PATH (created or truncated,
 *                                   mode 0644) with "crasher pid=N\n"
 *   --fork=N         CRASHER_FORK   first fork N children one after another,
 *                                   each of which crashes (N cores from one
 *                                   container, distinct PIDs) and is reaped
 *   --touch=MiB      CRASHER_TOUCH  first write MiB of heap, so the core is
 *                                   at least that large (0)
 *   -v                              print the version and exit 0
 *
 * Crash loop: with no delay the container dies within milliseconds of each
 * start, so under restartPolicy Always the kubelet's CrashLoopBackOff applies
 * and every restart dumps one more core.
 *
 * Each step is logged on stdout ("crasher: ..."), which ends up in the
 * container's log. Built with gcc -static (no libc at run time) and -g.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "v1"
#define MAX_FORK 1000
#define MAX_TOUCH_MIB 4096
#define MAX_DELAY 86400

static volatile int *target; /* NULL: the write to it is the crash */

/* option returns the value of --name=VALUE among argv, else $env, else NULL. */
static const char *option(int argc, char **argv, const char *name, const char *env) {
	size_t n = strlen(name);
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=')
			return argv[i] + n + 1;
	}
	return getenv(env);
}

/* number parses a bounded non-negative decimal; it exits 2 on anything else. */
static long number(const char *what, const char *s, long max) {
	char *end;
	if (s == NULL || *s == '\0')
		return 0;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > max) {
		fprintf(stderr, "crasher: %s must be a number from 0 to %ld\n", what, max);
		exit(2);
	}
	return v;
}

static void raise_core_limit(void) {
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
	if (setrlimit(RLIMIT_CORE, &rl) != 0) {
		if (getrlimit(RLIMIT_CORE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_CORE, &rl);
		}
	}
	if (getrlimit(RLIMIT_CORE, &rl) == 0) {
		if (rl.rlim_cur == RLIM_INFINITY)
			printf("crasher: RLIMIT_CORE unlimited\n");
		else
			printf("crasher: RLIMIT_CORE %llu\n", (unsigned long long)rl.rlim_cur);
	}
}

static void crash(void) {
	printf("crasher: pid=%d crashing (SIGSEGV)\n", (int)getpid());
	fflush(stdout);
	*target = 42;
	abort(); /* not reached */
}

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			printf("crasher %s\n", VERSION);
			return 0;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	long delay = number("--delay", option(argc, argv, "--delay", "CRASHER_DELAY"), MAX_DELAY);
	long forks = number("--fork", option(argc, argv, "--fork", "CRASHER_FORK"), MAX_FORK);
	long touch = number("--touch", option(argc, argv, "--touch", "CRASHER_TOUCH"), MAX_TOUCH_MIB);
	const char *write_path = option(argc, argv, "--write", "CRASHER_WRITE");

	raise_core_limit();

	if (write_path != NULL && *write_path != '\0') {
		int fd = open(write_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "crasher: open %s: %s\n", write_path, strerror(errno));
			return 3;
		}
		char line[64];
		int n = snprintf(line, sizeof line, "crasher pid=%d\n", (int)getpid());
		if (write(fd, line, (size_t)n) != n || close(fd) != 0) {
			fprintf(stderr, "crasher: write %s: %s\n", write_path, strerror(errno));
			return 3;
		}
		printf("crasher: wrote %s\n", write_path);
	}

	if (touch > 0) {
		size_t size = (size_t)touch << 20;
		char *p = malloc(size);
		for (size_t i = 0; p != NULL && i < size; i += 4096)
			p[i] = (char)(i >> 12);
		printf("crasher: touched %ld MiB\n", touch);
	}

	for (long i = 0; i < forks; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			fprintf(stderr, "crasher: fork: %s\n", strerror(errno));
			return 4;
		}
		if (pid == 0)
			crash();
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		printf("crasher: child %d ended (signal %d, core %s)\n", (int)pid,
		       WIFSIGNALED(status) ? WTERMSIG(status) : 0,
		       WIFSIGNALED(status) && WCOREDUMP(status) ? "dumped" : "none");
	}

	if (delay > 0) {
		printf("crasher: sleeping %ld s\n", delay);
		sleep((unsigned)delay);
	}
	crash();
	return 0;
}
