/*
 * escape-probe: the few system calls the escape cases (testdata/build/escape-*)
 * need that busybox has no applet for. Built static by the cases' scripts
 * (`cc -static -o probe $TOOLS/escape-probe.c`), used on the host to plant
 * and check canaries and inside RUN steps as an attacker would.
 *
 *   keyring add DESC DATA   add a "user" key to the caller's user keyring; prints its id
 *   keyring show ID         the key's payload, or the error
 *   keyring unlink ID       remove it from the user keyring
 *   keyring steal PREFIX    (in a step) read the first key of the user keyring whose
 *                           description starts with PREFIX, try add_key and request_key
 *   suid                    the real and effective uid of this process
 *   flush-badfd             fsync, fdatasync, sync_file_range and syncfs of a file
 *                           descriptor that is not open: each call's result (a step
 *                           whose flushes are no-ops sees 0, otherwise EBADF)
 *   cgroup-escape           (in a step) `unshare -UrmC`, mount the cgroup hierarchy
 *                           (v1 pids, else v2), set pids.max of every group named
 *                           kiln-escape-canary-* to 1, make a group kiln-escape-step-PID
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEY_SPEC_USER_KEYRING -4
#define KEYCTL_UNLINK 9
#define KEYCTL_DESCRIBE 6
#define KEYCTL_READ 11

static long keyctl(long op, long a, long b, long c, long d) {
    return syscall(SYS_keyctl, op, a, b, c, d);
}

static int show(long id) {
    char buf[256];
    long n = keyctl(KEYCTL_READ, id, (long)buf, sizeof buf - 1, 0);
    if (n < 0) {
        printf("keyctl read: %s\n", strerror(errno));
        return 1;
    }
    buf[n < (long)sizeof buf - 1 ? n : (long)sizeof buf - 1] = 0;
    printf("%s\n", buf);
    return 0;
}

static int steal(const char *prefix) {
    int ids[256];
    long n = keyctl(KEYCTL_READ, KEY_SPEC_USER_KEYRING, (long)ids, sizeof ids, 0);
    if (n < 0) {
        printf("reading the user keyring: %s\n", strerror(errno));
    } else {
        int found = 0;
        for (long i = 0; i < n / 4 && i < 256 && !found; i++) {
            char desc[256];
            long m = keyctl(KEYCTL_DESCRIBE, ids[i], (long)desc, sizeof desc - 1, 0);
            if (m <= 0)
                continue;
            desc[m < (long)sizeof desc - 1 ? m : (long)sizeof desc - 1] = 0;
            /* "type;uid;gid;perm;description" */
            char *d = strrchr(desc, ';');
            if (d && strncmp(d + 1, prefix, strlen(prefix)) == 0) {
                printf("read a host key: ");
                show(ids[i]);
                found = 1;
            }
        }
        if (!found)
            printf("no host key in the user keyring\n");
    }
    long id = syscall(SYS_add_key, "user", "kiln-escape-step", "x", 1, KEY_SPEC_USER_KEYRING);
    if (id < 0) {
        printf("add_key: %s\n", strerror(errno));
    } else {
        printf("add_key: added a key to the user keyring\n");
        keyctl(KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING, 0, 0);
    }
    id = syscall(SYS_request_key, "user", "kiln-escape-missing", NULL, KEY_SPEC_USER_KEYRING);
    printf("request_key: %s\n", id < 0 ? strerror(errno) : "found a key");
    return 0;
}

static int write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = write(fd, data, strlen(data)) < 0 ? -1 : 0;
    close(fd);
    return r;
}

static int cgroup_escape(void) {
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) < 0) {
        printf("unshare: %s\n", strerror(errno));
        return 0;
    }
    char map[64];
    write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "0 %d 1", (int)uid);
    write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "0 %d 1", (int)gid);
    write_file("/proc/self/gid_map", map);
    mkdir("/tmp/cg", 0755);
    if (mount("none", "/tmp/cg", "cgroup", 0, "pids") < 0 &&
        mount("none", "/tmp/cg", "cgroup2", 0, NULL) < 0) {
        printf("mount cgroup: %s\n", strerror(errno));
        return 0;
    }
    printf("mounted the cgroup hierarchy\n");
    DIR *d = opendir("/tmp/cg");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "kiln-escape-canary-", 19) != 0)
            continue;
        char p[512];
        snprintf(p, sizeof p, "/tmp/cg/%s/pids.max", e->d_name);
        if (write_file(p, "1") == 0)
            printf("rewrote a host group's pids.max\n");
        else
            printf("pids.max: %s\n", strerror(errno));
    }
    char p[128];
    snprintf(p, sizeof p, "/tmp/cg/kiln-escape-step-%d", (int)getpid());
    if (mkdir(p, 0755) == 0)
        printf("made a host group\n");
    else
        printf("mkdir a group: %s\n", strerror(errno));
    return 0;
}

static void result(const char *call, int r) {
    printf("%s: %s\n", call, r == 0 ? "0" : strerror(errno));
}

static int flush_badfd(void) {
    const int fd = 987;
    result("fsync", fsync(fd));
    result("fdatasync", fdatasync(fd));
    result("sync_file_range", sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE));
    result("syncfs", syncfs(fd));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "flush-badfd") == 0)
        return flush_badfd();
    if (argc == 2 && strcmp(argv[1], "cgroup-escape") == 0)
        return cgroup_escape();
    if (argc >= 2 && strcmp(argv[1], "suid") == 0) {
        printf("uid %d euid %d\n", (int)getuid(), (int)geteuid());
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "keyring") == 0 && strcmp(argv[2], "add") == 0 && argc == 5) {
        long id = syscall(SYS_add_key, "user", argv[3], argv[4], strlen(argv[4]),
                          KEY_SPEC_USER_KEYRING);
        if (id < 0) {
            printf("add_key: %s\n", strerror(errno));
            return 1;
        }
        printf("%ld\n", id);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "keyring") == 0 && strcmp(argv[2], "show") == 0)
        return show(atol(argv[3]));
    if (argc == 4 && strcmp(argv[1], "keyring") == 0 && strcmp(argv[2], "unlink") == 0) {
        if (keyctl(KEYCTL_UNLINK, atol(argv[3]), KEY_SPEC_USER_KEYRING, 0, 0) < 0) {
            printf("keyctl unlink: %s\n", strerror(errno));
            return 1;
        }
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "keyring") == 0 && strcmp(argv[2], "steal") == 0)
        return steal(argv[3]);
    fprintf(stderr, "usage: escape-probe keyring add|show|unlink|steal ... | suid | flush-badfd\n");
    return 2;
}
