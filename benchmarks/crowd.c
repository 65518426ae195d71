/* Copyright (c) sessionguard.mosh contributors
 * GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
 * SPDX-License-Identifier: GPL-3.0-or-later
 *
 * crowd COUNT UID...: fork COUNT paused children, spread round-robin over the given UIDs, then print
 * "ready" and wait. Run as root. Every child sets PR_SET_PDEATHSIG after setresuid (the kernel clears it on a
 * credential change), so all of them die with this process; end it by closing its stdin or killing it.
 * Children killed from outside are reaped, so a killed user leaves no zombies behind.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

static void child(uid_t uid, pid_t parent)
{
	if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) || setresuid(uid, uid, uid))
		_exit(1);
	/* The credential change made the child non-dumpable (root would own its /proc entry); a user's program is
	 * dumpable after its exec, and so is this one now. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || prctl(PR_SET_DUMPABLE, 1) || getppid() != parent)
		_exit(1);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: crowd COUNT UID...\n");
		return 2;
	}
	long count = atol(argv[1]);
	int nuids = argc - 2;
	pid_t self = getpid();
	for (long i = 0; i < count; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			child((uid_t)atol(argv[2 + i % nuids]), self);
	}
	printf("ready\n");
	fflush(stdout);
	/* Reap killed children until stdin closes (select would be tidier; a reaper child keeps this simple). */
	pid_t reaper = fork();
	if (reaper == 0) {
		char buf[64];
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		while (read(0, buf, sizeof buf) > 0)
			;
		_exit(0);
	}
	for (;;) {
		pid_t pid = wait(NULL);
		if (pid == reaper || pid < 0)
			break;
	}
	return 0;
}
