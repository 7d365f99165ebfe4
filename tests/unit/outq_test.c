/* outq_test.c: the outbound queue's accounting on a real worker loop run in
 * this thread, against a real loopback client: frames are shared by
 * reference, bytes are counted until the kernel takes them, the limit closes
 * a consumer that does not read (1013) and every reference comes back. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "frame.h"
#include "harness.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "worker.h"

static hub_server_t srv;
static hub_worker_t w;
static int port;

static void spin(int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&w.loop, UV_RUN_NOWAIT);
}

static int setup(void)
{
    char err[256];
    setenv("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "64KiB", 1);
    setenv("GOHUB_SERVER_CLOSE_TIMEOUT", "100ms", 1);
    memset(&srv, 0, sizeof(srv));
    srv.cfg = hub_config_load(NULL, err, sizeof(err));
    unsetenv("GOHUB_LIMITS_MAX_OUTBOUND_BYTES");
    unsetenv("GOHUB_SERVER_CLOSE_TIMEOUT");
    if (srv.cfg == NULL)
        return -1;
    srv.max_connections = 100;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    port = ntohs(a.sin_port);
    uint8_t scope = HUB_SCOPE_WS;
    return hub_worker_init(&w, &srv, 0, &fd, &scope, 1);
}

static void teardown(void)
{
    hub_worker_stop(&w, 1);
    while (uv_run(&w.loop, UV_RUN_NOWAIT) != 0)
        ;
    hub_worker_destroy(&w);
    hub_config_free(srv.cfg);
}

/* A blocking client with a tiny receive buffer; returns its fd and the
 * server side connection once accepted. */
static int connect_client(hub_conn_t **out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    uint64_t before = w.nconns;
    for (int i = 0; i < 1000 && w.nconns == before; i++)
        spin(1);
    *out = w.conns;
    return w.nconns == before + 1 ? fd : -1;
}

static size_t read_all(int fd, uint8_t *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        struct pollfd p = { fd, POLLIN, 0 };
        spin(1);
        if (poll(&p, 1, 10) <= 0)
            continue;
        ssize_t n = read(fd, buf + got, want - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

TEST(shared_frame_refcount_and_bytes)
{
    hub_conn_t *c;
    int fd = connect_client(&c);
    ASSERT(fd >= 0);
    hub_frame_t *f = hub_frame_alloc(1000);
    memset(f->data, 'x', 1000);
    f->kind = HUB_MT_ROOM_MESSAGE;
    uint64_t sent0 = hub_mc_get(&w.metrics.sent[HUB_MT_ROOM_MESSAGE]);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(hub_conn_send(c, f), 0);
    ASSERT_EQ(f->refcnt, 4);           /* ours + one per queued copy */
    ASSERT_EQ(c->oq_bytes, 3000);
    /* the worker's gauge samples the queues; one message per recipient */
    hub_worker_sample_metrics(&w);
    ASSERT_EQ(hub_mc_get(&w.metrics.queue_bytes), 3000);
    ASSERT_EQ(hub_mc_get(&w.metrics.sent[HUB_MT_ROOM_MESSAGE]) - sent0, 3);
    spin(5);                           /* prepare phase flushes */
    ASSERT_EQ(c->oq_bytes, 0);
    hub_worker_sample_metrics(&w);
    ASSERT_EQ(hub_mc_get(&w.metrics.queue_bytes), 0);
    ASSERT_EQ(f->refcnt, 1);           /* every reference came back */
    uint8_t buf[3000];
    ASSERT_EQ(read_all(fd, buf, sizeof(buf)), 3000);
    for (size_t i = 0; i < sizeof(buf); i++)
        ASSERT(buf[i] == 'x');
    hub_frame_release(f);
    close(fd);
    for (int i = 0; i < 200 && w.nconns > 0; i++)
        spin(1);
    ASSERT_EQ(w.nconns, 0);
}

TEST(limit_closes_a_consumer_that_does_not_read)
{
    hub_conn_t *c;
    int fd = connect_client(&c);
    ASSERT(fd >= 0);
    c->state = HUB_CONN_WS; /* as after an upgrade */
    hub_frame_t *f = hub_frame_alloc(16 * 1024);
    memset(f->data, 'y', f->len);
    f->kind = HUB_MT_BROADCAST;
    uint64_t slow0 = hub_mc_get(&w.metrics.slow_consumers);
    uint64_t full0 = hub_mc_get(&w.metrics.dropped[HUB_DROP_QUEUE_FULL]);
    uint64_t closed0 = hub_mc_get(&w.metrics.dropped[HUB_DROP_CLOSED]);
    int r = 0, sends = 0;
    uint64_t limit = srv.cfg->max_outbound_bytes;
    while (sends < 100000) {
        r = hub_conn_send(c, f);
        if (r != 0)
            break;
        sends++;
        ASSERT(c->oq_bytes <= limit);  /* never over the limit */
        spin(1);
    }
    ASSERT_EQ(r, HUB_EFULL);
    ASSERT_EQ(c->state, HUB_CONN_CLOSING);
    ASSERT(c->flags & HUB_CONN_F_NOMORE);
    ASSERT_EQ(hub_conn_send(c, f), HUB_ECLOSED); /* nothing after the close */
    ASSERT_EQ(hub_mc_get(&w.metrics.slow_consumers) - slow0, 1);
    /* the refused frame, plus what was queued but not handed to the kernel */
    ASSERT(hub_mc_get(&w.metrics.dropped[HUB_DROP_QUEUE_FULL]) - full0 >= 1);
    ASSERT(hub_mc_get(&w.metrics.dropped[HUB_DROP_CLOSED]) - closed0 >= 1);
    hub_worker_sample_metrics(&w);
    ASSERT_EQ(hub_mc_get(&w.metrics.queue_bytes), c->oq_bytes);
    /* the lingering close ends at server.close_timeout (100 ms here) */
    for (int i = 0; i < 2000 && w.nconns > 0; i++) {
        spin(1);
        usleep(1000);
    }
    ASSERT_EQ(w.nconns, 0);
    hub_worker_sample_metrics(&w);
    ASSERT_EQ(hub_mc_get(&w.metrics.queue_bytes), 0);
    ASSERT_EQ(f->refcnt, 1);           /* queued and in-flight references released */
    hub_frame_release(f);
    close(fd);
}

TEST(raw_sends_are_exempt_from_the_limit)
{
    hub_conn_t *c;
    int fd = connect_client(&c);
    ASSERT(fd >= 0);
    hub_frame_t *big = hub_frame_alloc(srv.cfg->max_outbound_bytes + 1);
    memset(big->data, 'z', big->len);
    hub_conn_send_raw(c, big);         /* takes our reference */
    ASSERT_EQ(c->state, HUB_CONN_HTTP);
    ASSERT_EQ(c->oq_bytes, srv.cfg->max_outbound_bytes + 1);
    hub_worker_sample_metrics(&w);
    ASSERT_EQ(hub_mc_get(&w.metrics.queue_bytes), srv.cfg->max_outbound_bytes + 1);
    hub_conn_abort(c);
    for (int i = 0; i < 200 && w.nconns > 0; i++)
        spin(1);
    ASSERT_EQ(w.nconns, 0);
    hub_worker_sample_metrics(&w);
    ASSERT_EQ(hub_mc_get(&w.metrics.queue_bytes), 0); /* dropped with the connection */
    close(fd);
}

int main(void)
{
    hub_log_setup(HUB_LOG_ERROR, HUB_LOG_TEXT); /* the slow-consumer warning is expected */
    if (setup() != 0) {
        printf("setup failed\n");
        return 1;
    }
    RUN(shared_frame_refcount_and_bytes);
    RUN(limit_closes_a_consumer_that_does_not_read);
    RUN(raw_sends_are_exempt_from_the_limit);
    teardown();
    HARNESS_MAIN_END();
}
