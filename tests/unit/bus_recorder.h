/* bus_recorder.h: what the two transport tests (bus_nats_test.c,
 * bus_redis_test.c) share: the record of the messages a transport delivered
 * to the core's callback, and a free loopback port for a server they start.
 * Header-only; include after harness.h. */
#ifndef HUB_TEST_BUS_RECORDER_H
#define HUB_TEST_BUS_RECORDER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    char subject[64];
    char body[64]; /* first bytes, NUL-terminated */
    size_t n;      /* full payload length */
} rec_msg_t;

/* Appends one delivered message to *msgs (*n used of *cap, grown here). */
static void rec_push(rec_msg_t **msgs, size_t *n, size_t *cap, const char *subject, size_t slen,
                     const uint8_t *p, size_t len)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *msgs = realloc(*msgs, *cap * sizeof(**msgs));
        hub_assert(*msgs != NULL);
    }
    rec_msg_t *m = &(*msgs)[(*n)++];
    size_t sl = slen < sizeof(m->subject) - 1 ? slen : sizeof(m->subject) - 1;
    memcpy(m->subject, subject, sl);
    m->subject[sl] = '\0';
    size_t bl = len < sizeof(m->body) - 1 ? len : sizeof(m->body) - 1;
    memcpy(m->body, p, bl);
    m->body[bl] = '\0';
    m->n = len;
}

/* A loopback TCP port nobody listens on right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    hub_assert(fd >= 0);
    hub_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    hub_assert(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

#endif
