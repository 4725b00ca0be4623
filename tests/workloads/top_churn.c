/* Process churn for `top`: keep N children alive, each touching 64 KiB and exiting
 * after a few ms, replacing them as they die, for S seconds.  top_churn N S */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void child(void)
{
	long page = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < 16; i++)
		p[i * page] = 1;
	usleep(5000 + rand() % 20000);
	_exit(0);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 200;
	double until = now() + (argc > 2 ? atof(argv[2]) : 30);
	long spawned = 0;
	int alive = 0;
	while (now() < until) {
		while (alive < n) {
			pid_t pid = fork();
			if (pid == 0) {
				srand(getpid());
				child();
			}
			if (pid > 0) {
				alive++;
				spawned++;
			}
		}
		if (wait(NULL) > 0)
			alive--;
	}
	while (wait(NULL) > 0)
		;
	printf("spawned %ld\n", spawned);
	return 0;
}
