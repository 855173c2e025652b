/*
 * A stalled disk for tests, loaded into contextd with LD_PRELOAD: while the file named by
 * CONTEXTD_FSYNC_GATE exists, every fsync(2) and fdatasync(2) waits before it runs, and the
 * first waiting call creates "<gate>.waiting" so the test knows one is held. Removing the gate
 * lets every held call go on to the real system call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void wait_while_gated(void) {
    const char *gate = getenv("CONTEXTD_FSYNC_GATE");
    if (gate == NULL || access(gate, F_OK) != 0) {
        return;
    }
    char marker[4096];
    snprintf(marker, sizeof marker, "%s.waiting", gate);
    int fd = open(marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
    }
    while (access(gate, F_OK) == 0) {
        usleep(1000);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    wait_while_gated();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    wait_while_gated();
    return real(fd);
}
