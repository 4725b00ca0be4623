/* A process with a chosen (possibly hostile) comm that keeps faulting a little,
 * so it shows up in `top`: prctl(PR_SET_NAME, argv[1]), then every 100 ms maps,
 * touches and unmaps 16 pages, until stdin reaches EOF or argv[2] seconds pass. */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	double limit = argc > 2 ? atof(argv[2]) : 1e9;
	long page = sysconf(_SC_PAGESIZE);
	printf("ready\n");
	fflush(stdout);
	for (double t = 0; t < limit; t += 0.1) {
		char *p = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		for (int i = 0; i < 16; i++)
			p[i * page] = 1;
		munmap(p, 16 * page);
		struct pollfd pfd = { .fd = 0, .events = POLLIN };
		if (poll(&pfd, 1, 100) > 0) {
			char buf[64];
			if (read(0, buf, sizeof(buf)) <= 0)
				break;
		}
	}
	return 0;
}
