/* Short-lived processes taking THP faults: thp_churn N PARALLEL
 * N children in all, PARALLEL at a time; each names itself "c<pid>" (so a test can check
 * every row's comm), takes 2 THP faults (2 MiB-aligned MADV_HUGEPAGE, one write per PMD)
 * and exits. Prints "spawned N". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void child(void)
{
	char name[16];
	snprintf(name, sizeof(name), "c%d", (int)getpid());
	prctl(PR_SET_NAME, name);
	long pmd = 2L << 20;
	char *raw = mmap(NULL, 3 * pmd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		_exit(1);
	char *p = (char *)(((unsigned long)raw + pmd - 1) & ~(pmd - 1));
	madvise(p, 2 * pmd, MADV_HUGEPAGE);
	p[0] = 1;
	p[pmd] = 1;
	_exit(0);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 3000;
	int par = argc > 2 ? atoi(argv[2]) : 16, alive = 0;
	long spawned = 0;
	while (spawned < n || alive > 0) {
		while (spawned < n && alive < par) {
			pid_t pid = fork();
			if (pid == 0)
				child();
			if (pid > 0) {
				alive++;
				spawned++;
			}
		}
		if (wait(NULL) > 0)
			alive--;
	}
	printf("spawned %ld\n", spawned);
	return 0;
}
