/* What a RUN step of the escape-network case tries against the host's
 * network; compiled static by the case's setup, run inside the step.
 * Each mode prints one line saying what it saw, never a host-specific
 * value.
 *
 *   probe sniff SECONDS NEEDLE     raw socket (AF_PACKET, every interface):
 *                                  was NEEDLE in any packet?
 *   probe get ADDR PORT            TCP connect, GET /, first body line
 *   probe bind PORT SECONDS        bind and listen on 0.0.0.0:PORT, hold
 *   probe syn ADDR PORT            a hand-made TCP SYN to ADDR:PORT, sent
 *                                  through eth0 to the gateway's MAC
 *                                  address (the way round a kernel that
 *                                  keeps 127/8 on lo): any answer?
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int sniff(int seconds, const char *needle) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) {
        printf("sniff: raw socket refused (%s)\n", strerror(errno));
        return 0;
    }
    size_t n = strlen(needle);
    unsigned char buf[65536];
    double end = now() + seconds;
    int seen = 0;
    while (!seen && now() < end) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = recv(s, buf, sizeof buf, 0);
        for (ssize_t i = 0; r > 0 && i + (ssize_t)n <= r; i++)
            if (memcmp(buf + i, needle, n) == 0) { seen = 1; break; }
    }
    printf("sniff: raw socket opened, needle %s\n", seen ? "SEEN" : "not seen");
    return 0;
}

static int get(const char *addr, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, addr, &a.sin_addr);
    /* connect: 5 s (a dropped SYN times out); an answer: 30 s */
    struct timeval tv = {5, 0}, rtv = {30, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &rtv, sizeof rtv);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("get: %s\n", errno == ECONNREFUSED ? "connection refused"
                            : errno == EINPROGRESS || errno == EAGAIN || errno == ETIMEDOUT ? "timed out"
                            : strerror(errno));
        return 0;
    }
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    if (write(s, req, strlen(req)) < 0) { printf("get: write failed\n"); return 0; }
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(s, buf + len, sizeof buf - 1 - len)) > 0) len += r;
    buf[len] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (!body) { printf("get: connected, no HTTP answer (%zu bytes)\n", len); return 0; }
    body += 4;
    body[strcspn(body, "\r\n")] = 0;
    printf("get: connected, body %s\n", body);
    return 0;
}

static int bind_port(int port, int seconds) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4) < 0) {
        printf("bind: %s\n", strerror(errno));
        fflush(stdout);
        return 0;
    }
    printf("bind: listening\n");
    fflush(stdout);
    sleep(seconds);
    return 0;
}

static unsigned short csum(const void *data, size_t len, unsigned long sum) {
    const unsigned char *p = data;
    for (size_t i = 0; i + 1 < len; i += 2) sum += (p[i] << 8) | p[i + 1];
    if (len & 1) sum += p[len - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return htons(~sum & 0xffff);
}

/* The gateway of eth0 (from /proc/net/route) and its MAC address (from
 * /proc/net/arp, after a datagram makes the kernel ask for it). */
static int gateway(struct in_addr *gw, unsigned char mac[6]) {
    FILE *f = fopen("/proc/net/route", "r");
    char line[256], ifc[32];
    unsigned dest, g;
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%31s %x %x", ifc, &dest, &g) == 3 && dest == 0 && g) { gw->s_addr = g; found = 1; }
    if (f) fclose(f);
    if (!found) return -1;
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr = *gw};
    for (int i = 0; i < 20; i++) {
        sendto(u, "x", 1, 0, (struct sockaddr *)&a, sizeof a);
        usleep(50000);
        f = fopen("/proc/net/arp", "r");
        while (f && fgets(line, sizeof line, f)) {
            char ip[64], hw[64];
            unsigned m[6];
            if (sscanf(line, "%63s %*s %*s %63s", ip, hw) == 2 && inet_addr(ip) == gw->s_addr &&
                sscanf(hw, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6 &&
                (m[0] | m[1] | m[2] | m[3] | m[4] | m[5])) {
                for (int k = 0; k < 6; k++) mac[k] = m[k];
                fclose(f);
                close(u);
                return 0;
            }
        }
        if (f) fclose(f);
    }
    close(u);
    return -1;
}

static int syn(const char *addr, int port) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    if (s < 0) { printf("syn: raw socket refused (%s)\n", strerror(errno)); return 0; }
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "eth0");
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { printf("syn: no eth0\n"); return 0; }
    int ifindex = ifr.ifr_ifindex;
    unsigned char src_mac[6], gw_mac[6];
    ioctl(s, SIOCGIFHWADDR, &ifr);
    memcpy(src_mac, ifr.ifr_hwaddr.sa_data, 6);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    ioctl(u, SIOCGIFADDR, &ifr);
    struct in_addr src = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr;
    close(u);
    struct in_addr gw, dst;
    if (gateway(&gw, gw_mac) < 0) { printf("syn: no gateway\n"); return 0; }
    inet_pton(AF_INET, addr, &dst);

    unsigned char frame[14 + 20 + 20] = {0};
    struct ether_header *eh = (void *)frame;
    struct iphdr *ip = (void *)(frame + 14);
    struct tcphdr *tcp = (void *)(frame + 34);
    memcpy(eh->ether_dhost, gw_mac, 6);
    memcpy(eh->ether_shost, src_mac, 6);
    eh->ether_type = htons(ETHERTYPE_IP);
    ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_TCP;
    ip->tot_len = htons(40); ip->id = htons(4242);
    ip->saddr = src.s_addr; ip->daddr = dst.s_addr;
    ip->check = csum(ip, 20, 0);
    unsigned short sport = 40000 + (getpid() % 20000);
    tcp->source = htons(sport); tcp->dest = htons(port);
    tcp->seq = htonl(0x12345678); tcp->doff = 5; tcp->syn = 1; tcp->window = htons(65535);
    unsigned char pseudo[12 + 20];
    memcpy(pseudo, &ip->saddr, 4); memcpy(pseudo + 4, &ip->daddr, 4);
    pseudo[8] = 0; pseudo[9] = IPPROTO_TCP; pseudo[10] = 0; pseudo[11] = 20;
    memcpy(pseudo + 12, tcp, 20);
    tcp->check = csum(pseudo, sizeof pseudo, 0);

    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};
    memcpy(ll.sll_addr, gw_mac, 6);
    int answer = 0;
    for (int attempt = 0; attempt < 3 && !answer; attempt++) {
        if (sendto(s, frame, sizeof frame, 0, (struct sockaddr *)&ll, sizeof ll) < 0) {
            printf("syn: the frame was dropped before it left (%s)\n", strerror(errno));
            return 0;
        }
        double end = now() + 1;
        unsigned char buf[65536];
        while (!answer && now() < end) {
            struct pollfd p = {s, POLLIN, 0};
            if (poll(&p, 1, 100) <= 0) continue;
            ssize_t r = recv(s, buf, sizeof buf, 0);
            if (r < 34 + 20) continue;
            struct iphdr *rip = (void *)(buf + 14);
            struct tcphdr *rt = (void *)(buf + 14 + rip->ihl * 4);
            if (rip->protocol == IPPROTO_TCP && rip->saddr == dst.s_addr &&
                ntohs(rt->source) == port && ntohs(rt->dest) == sport)
                answer = rt->syn && rt->ack ? 1 : rt->rst ? 2 : 3;
        }
    }
    printf("syn: %s\n", answer == 1 ? "SYN-ACK came back" : answer == 2 ? "RST came back"
                        : answer == 3 ? "an answer came back" : "no answer");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && !strcmp(argv[1], "sniff")) return sniff(atoi(argv[2]), argv[3]);
    if (argc == 4 && !strcmp(argv[1], "get")) return get(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "bind")) return bind_port(atoi(argv[2]), atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "syn")) return syn(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: probe sniff SECONDS NEEDLE | get ADDR PORT | bind PORT SECONDS | syn ADDR PORT\n");
    return 2;
}
