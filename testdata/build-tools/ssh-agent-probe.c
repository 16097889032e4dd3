/* A client of an SSH agent for build cases (static, run inside RUN steps,
 * where busybox has none): connects to $SSH_AUTH_SOCK, lists the
 * identities (type and comment), asks each for a signature of "kiln"
 * (RSA with SHA-512) and prints the algorithm of what comes back (an
 * ECDSA signature's size varies with its numbers: not printed),
 * then asks to add a key and to remove all keys, printing whether the agent
 * refused. Built by the case: cc -static -O2 -o probe ssh-agent-probe.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fd;

static void die(const char *what) { printf("probe: %s\n", what); exit(1); }

static void put32(unsigned char *p, uint32_t n) {
    p[0] = n >> 24; p[1] = n >> 16; p[2] = n >> 8; p[3] = n;
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void readall(unsigned char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) die("short read from the agent");
        p += r; n -= r;
    }
}

/* Sends msg (len bytes), returns the reply (its length in *rlen). */
static unsigned char *call(const unsigned char *msg, uint32_t len, uint32_t *rlen) {
    unsigned char hdr[4];
    put32(hdr, len);
    if (write(fd, hdr, 4) != 4 || write(fd, msg, len) != (ssize_t)len) die("write to the agent");
    readall(hdr, 4);
    *rlen = get32(hdr);
    if (*rlen == 0 || *rlen > 1 << 20) die("bad reply length");
    unsigned char *r = malloc(*rlen);
    readall(r, *rlen);
    return r;
}

/* A length-prefixed string at *p (advanced past it). */
static const unsigned char *str(const unsigned char **p, const unsigned char *end, uint32_t *n) {
    if (end - *p < 4) die("truncated reply");
    *n = get32(*p);
    *p += 4;
    if ((uint32_t)(end - *p) < *n) die("truncated reply");
    const unsigned char *s = *p;
    *p += *n;
    return s;
}

int main(void) {
    const char *path = getenv("SSH_AUTH_SOCK");
    if (!path) die("no SSH_AUTH_SOCK");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("cannot connect to the agent");

    unsigned char req = 11; /* REQUEST_IDENTITIES */
    uint32_t rlen;
    unsigned char *r = call(&req, 1, &rlen);
    if (r[0] != 12) die("no identities answer");
    const unsigned char *p = r + 1, *end = r + rlen;
    if (end - p < 4) die("truncated reply");
    uint32_t count = get32(p);
    p += 4;
    printf("%u identities\n", count);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t blen, clen, tlen;
        const unsigned char *blob = str(&p, end, &blen);
        const unsigned char *comment = str(&p, end, &clen);
        const unsigned char *bp = blob;
        const unsigned char *type = str(&bp, blob + blen, &tlen);
        printf("key %.*s %.*s:", (int)tlen, type, (int)clen, comment);
        /* SIGN_REQUEST: string blob, string data, uint32 flags */
        unsigned char *m = malloc(1 + 4 + blen + 4 + 4 + 4);
        size_t o = 0;
        m[o++] = 13;
        put32(m + o, blen); o += 4;
        memcpy(m + o, blob, blen); o += blen;
        put32(m + o, 4); o += 4;
        memcpy(m + o, "kiln", 4); o += 4;
        put32(m + o, 4); o += 4; /* SSH_AGENT_RSA_SHA2_512 */
        uint32_t slen;
        unsigned char *s = call(m, o, &slen);
        if (s[0] != 14) {
            printf(" signing refused\n");
        } else {
            const unsigned char *sp = s + 1, *se = s + slen;
            uint32_t sigl, alen, vlen;
            const unsigned char *sigb = str(&sp, se, &sigl);
            const unsigned char *sq = sigb;
            const unsigned char *alg = str(&sq, sigb + sigl, &alen);
            str(&sq, sigb + sigl, &vlen);
            printf(" signed with %.*s%s\n", (int)alen, alg, vlen > 0 ? "" : " (empty)");
        }
        free(s);
        free(m);
    }
    free(r);
    /* ADD_IDENTITY with an empty body, REMOVE_ALL_IDENTITIES */
    unsigned char add = 17, rm = 19;
    r = call(&add, 1, &rlen);
    printf("add a key: %s\n", r[0] == 5 ? "refused" : "accepted");
    free(r);
    r = call(&rm, 1, &rlen);
    printf("remove all keys: %s\n", r[0] == 5 ? "refused" : "accepted");
    free(r);
    return 0;
}
