/* bus_redis_test.c: the Redis transport of the cluster bus against a real
 * redis-server (fork/exec on a free loopback port, stopped by PID), driven
 * by a uv loop on this thread. The test defines the core's callbacks
 * (hub_bus_transport_state/message/dropped) to record what the transport
 * reports, so bus.o / cluster.o are never pulled from libgohub.a. A
 * "node" is one transport instance; its hub_bus_t * is the node record. */
#include "bus.h"
#include "config.h"
#include "harness.h"
#include "bus_recorder.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PREFIX "gohubtest"

/* ---- recording the core's side ------------------------------------------------------ */

typedef struct {
    void *impl;
    int state;            /* last reported */
    int ups, downs;       /* state(1) / state(0) calls */
    uint64_t up_at_ms;    /* time of the last state(1) */
    rec_msg_t *msgs;
    size_t nmsgs, capmsgs;
    size_t dropped;       /* hub_bus_transport_dropped calls */
    char drop_why[32];    /* reason of the last one */
} node_t;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

void hub_bus_transport_state(hub_bus_t *bus, int connected)
{
    node_t *nd = (node_t *)(void *)bus;
    nd->state = connected;
    if (connected) {
        nd->ups++;
        nd->up_at_ms = now_ms();
    } else {
        nd->downs++;
    }
}

void hub_bus_transport_message(hub_bus_t *bus, const char *subject, size_t slen,
                               const uint8_t *p, size_t n)
{
    node_t *nd = (node_t *)(void *)bus;
    rec_push(&nd->msgs, &nd->nmsgs, &nd->capmsgs, subject, slen, p, n);
}

void hub_bus_transport_dropped(hub_bus_t *bus, const char *why)
{
    node_t *nd = (node_t *)(void *)bus;
    nd->dropped++;
    snprintf(nd->drop_why, sizeof(nd->drop_why), "%s", why);
}

/* ---- loop and fixture --------------------------------------------------------------- */

static uv_loop_t loop;
static uv_timer_t tick; /* keeps UV_RUN_ONCE returning every 5 ms; counts loop turns */
static unsigned long ticks;

#define NODE_MAX 16
static node_t *nodes[NODE_MAX];
static size_t nnodes;

/* Where redis_cmd() connects, and with which password; reset per test. */
static const char *check_host = "127.0.0.1";
static const char *check_pass;

#define PID_MAX 8
static pid_t pids[PID_MAX];
static char tmpdir[64];

/* One extra timer a test may drive traffic with; teardown closes it. */
static uv_timer_t aux;
static int aux_open;

static void aux_start(uv_timer_cb cb, uint64_t period_ms)
{
    uv_timer_init(&loop, &aux);
    uv_timer_start(&aux, cb, period_ms, period_ms);
    aux_open = 1;
}

static void aux_close(void)
{
    if (aux_open)
        uv_close((uv_handle_t *)&aux, NULL);
    aux_open = 0;
}

static void on_tick(uv_timer_t *h)
{
    HUB_UNUSED(h);
    ticks++;
}

/* Runs the loop until expr holds or ms elapsed. */
#define WAIT(expr, ms)                                                         \
    do {                                                                       \
        uint64_t end_ = now_ms() + (ms);                                       \
        while (!(expr) && now_ms() < end_)                                     \
            uv_run(&loop, UV_RUN_ONCE);                                        \
    } while (0)

static void run_for(uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
}

static void kill_all_redis(void)
{
    for (int i = 0; i < PID_MAX; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            pids[i] = 0;
        }
}

static void setup(void)
{
    hub_assert(uv_loop_init(&loop) == 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    ticks = 0;
    nnodes = 0;
    check_host = "127.0.0.1";
    check_pass = NULL;
}

static void node_close(node_t *nd)
{
    if (nd->impl)
        hub_bus_redis.close(nd->impl);
    nd->impl = NULL;
}

static void teardown(void)
{
    for (size_t i = 0; i < nnodes; i++) {
        node_close(nodes[i]);
        free(nodes[i]->msgs);
        free(nodes[i]);
    }
    nnodes = 0;
    aux_close();
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* handle close callbacks, cancelled lookups */
    if (uv_loop_close(&loop) != 0) {
        printf("  teardown: handles left on the loop\n");
        harness_cur_failed = 1;
    }
    kill_all_redis();
}

#define FIXTURE(name)                                                          \
    static void body_##name(void);                                             \
    TEST(name)                                                                 \
    {                                                                          \
        setup();                                                               \
        body_##name();                                                         \
        teardown();                                                            \
    }                                                                          \
    static void body_##name(void)

/* ---- nodes ------------------------------------------------------------------------------ */

typedef struct {
    const char *password;      /* cluster.redis.password, NULL = "" */
    uint64_t publish_buffer;   /* 0 = 64 KiB */
    int no_buffer;             /* cluster.publish_buffer = 0 */
    uint32_t connect_timeout;  /* 0 = 1000 ms */
    const char *prefix;        /* NULL = PREFIX */
} node_opts_t;

/* Opens a transport on addr; returns its rc, *out the node (NULL on error). */
static int node_open_opts(const char *addr, const node_opts_t *o, node_t **out)
{
    struct hub_config_s cfg;
    memset(&cfg, 0, sizeof(cfg));
    char *items[1] = { strdup(addr) };
    char *prefix = strdup(o && o->prefix ? o->prefix : PREFIX);
    char *pass = strdup(o && o->password ? o->password : "");
    cfg.redis_addrs.items = items;
    cfg.redis_addrs.n = 1;
    cfg.redis_key_prefix = prefix;
    cfg.redis_password = pass;
    cfg.cluster_connect_timeout_ms = o && o->connect_timeout ? o->connect_timeout : 1000;
    cfg.cluster_reconnect_max_backoff_ms = 1000;
    cfg.cluster_publish_buffer = o && o->publish_buffer ? o->publish_buffer : 64 * 1024;
    if (o && o->no_buffer)
        cfg.cluster_publish_buffer = 0;
    node_t *nd = calloc(1, sizeof(*nd));
    hub_assert(nd != NULL && nnodes < NODE_MAX);
    int rc = hub_bus_redis.open((hub_bus_t *)(void *)nd, &loop, &cfg, &nd->impl);
    free(items[0]);
    free(prefix);
    free(pass);
    if (rc != 0) {
        free(nd);
        nd = NULL;
    } else {
        nodes[nnodes++] = nd;
    }
    *out = nd;
    return rc;
}

static node_t *node_open(const char *addr)
{
    node_t *nd = NULL;
    node_open_opts(addr, NULL, &nd);
    return nd;
}

static void node_pub(node_t *nd, const char *subject, const char *body)
{
    hub_bus_redis.publish(nd->impl, subject, (const uint8_t *)body, strlen(body), NULL);
}

static size_t count_subject(const node_t *nd, const char *subject)
{
    size_t k = 0;
    for (size_t i = 0; i < nd->nmsgs; i++)
        k += strcmp(nd->msgs[i].subject, subject) == 0;
    return k;
}

/* ---- redis-server ------------------------------------------------------------------------ */

/* Sync client for checks (never used while the server is stopped). */
static redisContext *rconn(const char *host, int port, const char *pass)
{
    struct timeval tv = { 1, 0 };
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (pass) {
        redisReply *r = redisCommand(c, "AUTH %s", pass);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

/* Starts redis-server on host:port with extra arguments (NULL-terminated)
 * and waits until it answers. Returns its pid or -1. */
static pid_t redis_start_on(const char *host, int port, const char *pass, const char *const *extra)
{
    char portbuf[16], logf[128];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    snprintf(logf, sizeof(logf), "%s/redis-%d.log", tmpdir, port);
    const char *argv[32] = { "redis-server", "--port", portbuf, "--bind", host, "--save", "",
                             "--appendonly", "no", "--dir", tmpdir, "--daemonize", "no" };
    int argc = 13;
    for (int i = 0; extra && extra[i] && argc < 30; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("redis-server", (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    for (int i = 0; i < PID_MAX; i++)
        if (pids[i] == 0) {
            pids[i] = pid;
            break;
        }
    uint64_t end = now_ms() + 5000;
    while (now_ms() < end) {
        redisContext *c = rconn(host, port, pass);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return pid;
        }
        usleep(20 * 1000);
    }
    return -1;
}

static pid_t redis_start(int port)
{
    return redis_start_on("127.0.0.1", port, NULL, NULL);
}

static void redis_kill9(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < PID_MAX; i++)
        if (pids[i] == pid)
            pids[i] = 0;
}

/* Runs one command on a fresh sync connection; returns the reply (caller
 * frees) or NULL. */
static redisReply *redis_cmd(int port, const char *fmt, ...)
{
    redisContext *c = rconn(check_host, port, check_pass);
    if (c == NULL)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* Subscribers of channel as Redis sees them, or -1. */
static long long numsub(int port, const char *channel)
{
    redisReply *r = redis_cmd(port, "PUBSUB NUMSUB %s", channel);
    long long n = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        n = r->element[1]->integer;
    if (r)
        freeReplyObject(r);
    return n;
}

/* Runs the loop until Redis counts n subscribers on channel. */
static int wait_numsub(int port, const char *channel, long long n, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    for (;;) {
        if (numsub(port, channel) == n)
            return 1;
        if (now_ms() >= end)
            return 0;
        run_for(20);
    }
}

/* PUBLISH from outside any transport; returns the receiver count or -1. */
static long long raw_publish(int port, const char *channel, const void *p, size_t n)
{
    redisReply *r = redis_cmd(port, "PUBLISH %s %b", channel, p, n);
    long long k = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    return k;
}

static int loopback6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* ---- tests ------------------------------------------------------------------------------- */

FIXTURE(bad_addresses_are_einval)
{
    static const char *const bad[] = {
        "", "redis://", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:abc", "127.0.0.1:",
        "::1:6379", "[::1:6379", "[::1]x", "[zz]:6379", "rediss://127.0.0.1:6379",
        "http://127.0.0.1:6379", "redis://user@127.0.0.1:6379", "redis://:@127.0.0.1:6379",
        "redis://:pw@127.0.0.1:6379/x", "redis://:p%zzw@127.0.0.1:6379",
        "redis://127.0.0.1:6379?db=1", "127.0.0.1 :6379", "user@127.0.0.1:6379",
        "ho$t:6379", "redis://:pw@:6379",
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        node_t *nd = (node_t *)(uintptr_t)1;
        int rc = node_open_opts(bad[i], NULL, &nd);
        if (rc != HUB_EINVAL)
            FAILF("\"%s\": rc %d, want HUB_EINVAL", bad[i], rc);
        ASSERT(nd == NULL);
    }
    node_opts_t o = { .prefix = "" };
    node_t *nd = NULL;
    ASSERT_EQ(node_open_opts("127.0.0.1:6379", &o, &nd), HUB_EINVAL);

    /* good ones open (nothing listens on port 1: they retry until closed) */
    static const char *const good[] = {
        "127.0.0.1:1", "127.0.0.1", "redis://127.0.0.1:1", "redis://:p%40ss@127.0.0.1:1/0",
        "redis://user:p:w@127.0.0.1:1", "redis://:a@b@127.0.0.1:1", "[::1]:1", "redis://[::1]:1/3",
        "localhost:1",
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(good); i++) {
        int rc = node_open_opts(good[i], NULL, &nd);
        if (rc != 0)
            FAILF("\"%s\": rc %d, want 0", good[i], rc);
    }
    /* one closed at once, with its name lookup possibly in flight */
    node_close(nodes[nnodes - 1]);
    run_for(300);
    for (size_t i = 0; i < nnodes; i++) {
        ASSERT_EQ(nodes[i]->ups, 0);
        ASSERT_EQ(nodes[i]->downs, 0);
    }
}

FIXTURE(connects_and_delivers_to_itself)
{
    int port = free_port();
    ASSERT(redis_start(port) > 0);
    char addr[64], laddr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    snprintf(laddr, sizeof(laddr), "localhost:%d", port);
    node_t *a = node_open(addr);
    node_t *l = node_open(laddr); /* through uv_getaddrinfo */
    ASSERT(a && l);
    WAIT(a->state && l->state, 3000);
    ASSERT_EQ(a->ups, 1);
    ASSERT_EQ(l->ups, 1);

    hub_bus_redis.subscribe(a->impl, "room.a");
    hub_bus_redis.subscribe(a->impl, "room.a"); /* idempotent */
    ASSERT(wait_numsub(port, PREFIX ".room.a", 1, 2000));
    node_pub(a, "room.a", "hello");
    WAIT(a->nmsgs == 1, 2000);
    ASSERT_EQ(a->nmsgs, 1);
    ASSERT_STREQ(a->msgs[0].subject, "room.a"); /* prefix stripped */
    ASSERT_STREQ(a->msgs[0].body, "hello");

    /* the channel on the wire is prefix + "." + subject */
    ASSERT_EQ(raw_publish(port, PREFIX ".room.a", "raw", 3), 1);
    WAIT(a->nmsgs == 2, 2000);
    ASSERT_EQ(a->nmsgs, 2);
    ASSERT_STREQ(a->msgs[1].subject, "room.a");
    ASSERT_STREQ(a->msgs[1].body, "raw");

    /* binary payload, empty payload, through the resolved-name node */
    hub_bus_redis.subscribe(l->impl, "bin");
    ASSERT(wait_numsub(port, PREFIX ".bin", 1, 2000));
    static const uint8_t bin[5] = { 0, 1, '\r', '\n', 0xff };
    hub_bus_redis.publish(l->impl, "bin", bin, sizeof(bin), "node-1");
    hub_bus_redis.publish(l->impl, "bin", bin, 0, NULL);
    WAIT(l->nmsgs == 2, 2000);
    ASSERT_EQ(l->nmsgs, 2);
    ASSERT_EQ(l->msgs[0].n, 5);
    ASSERT_MEMEQ(l->msgs[0].body, bin, 5);
    ASSERT_EQ(l->msgs[1].n, 0);
    ASSERT_EQ(a->nmsgs, 2); /* a never subscribed "bin" */

    /* a payload far larger than any socket buffer */
    size_t big = 300 * 1024;
    uint8_t *p = malloc(big);
    ASSERT(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 7);
    hub_bus_redis.publish(a->impl, "room.a", p, big, NULL);
    free(p);
    WAIT(a->nmsgs == 3, 3000);
    ASSERT_EQ(a->nmsgs, 3);
    ASSERT_EQ(a->msgs[2].n, big);
    ASSERT_EQ((uint8_t)a->msgs[2].body[10], 70);
    ASSERT_EQ(a->dropped + l->dropped, 0);
}

FIXTURE(two_nodes_exchange_messages_in_order)
{
    int port = free_port();
    ASSERT(redis_start(port) > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_t *a = node_open(addr), *b = node_open(addr);
    ASSERT(a && b);
    WAIT(a->state && b->state, 3000);
    ASSERT(a->state && b->state);
    hub_bus_redis.subscribe(a->impl, "to.a");
    hub_bus_redis.subscribe(b->impl, "to.b");
    ASSERT(wait_numsub(port, PREFIX ".to.a", 1, 2000));
    ASSERT(wait_numsub(port, PREFIX ".to.b", 1, 2000));
    char body[32];
    for (int i = 0; i < 500; i++) {
        snprintf(body, sizeof(body), "%08d", i);
        node_pub(a, "to.b", body);
    }
    node_pub(b, "to.a", "reply");
    WAIT(b->nmsgs == 500 && a->nmsgs == 1, 3000);
    ASSERT_EQ(b->nmsgs, 500);
    for (int i = 0; i < 500; i++) {
        snprintf(body, sizeof(body), "%08d", i);
        ASSERT_STREQ(b->msgs[i].body, body);
        ASSERT_STREQ(b->msgs[i].subject, "to.b");
    }
    ASSERT_EQ(a->nmsgs, 1);
    ASSERT_STREQ(a->msgs[0].subject, "to.a");
    ASSERT_STREQ(a->msgs[0].body, "reply");
}

FIXTURE(unsubscribe_stops_delivery)
{
    int port = free_port();
    ASSERT(redis_start(port) > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_t *a = node_open(addr);
    ASSERT(a);
    WAIT(a->state, 3000);
    hub_bus_redis.subscribe(a->impl, "x");
    ASSERT(wait_numsub(port, PREFIX ".x", 1, 2000));

    /* UNSUBSCRIBE is only queued (the loop has not run): Redis still sends
     * this message, and the transport must drop it */
    hub_bus_redis.unsubscribe(a->impl, "x");
    ASSERT_EQ(raw_publish(port, PREFIX ".x", "late", 4), 1);
    run_for(300);
    ASSERT_EQ(a->nmsgs, 0);
    ASSERT(wait_numsub(port, PREFIX ".x", 0, 2000));
    node_pub(a, "x", "after");
    hub_bus_redis.unsubscribe(a->impl, "x"); /* idempotent */
    hub_bus_redis.unsubscribe(a->impl, "never");
    run_for(200);
    ASSERT_EQ(a->nmsgs, 0);

    /* and subscribing again works */
    hub_bus_redis.subscribe(a->impl, "x");
    ASSERT(wait_numsub(port, PREFIX ".x", 1, 2000));
    node_pub(a, "x", "again");
    WAIT(a->nmsgs == 1, 2000);
    ASSERT_EQ(a->nmsgs, 1);
    ASSERT_STREQ(a->msgs[0].body, "again");
}

FIXTURE(server_down_at_open_then_appears)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_t *a = node_open(addr), *z = NULL;
    node_opts_t nobuf = { .no_buffer = 1 };
    ASSERT_EQ(node_open_opts(addr, &nobuf, &z), 0);
    ASSERT(a);
    /* remembered while down; published while down are queued */
    hub_bus_redis.subscribe(a->impl, "late");
    node_pub(a, "late", "q1");
    node_pub(a, "late", "q2");
    node_pub(a, "late", "q3");
    /* publish_buffer 0: nothing is kept while down */
    hub_bus_redis.subscribe(z->impl, "z");
    node_pub(z, "z", "lost");
    ASSERT_EQ(z->dropped, 1);
    ASSERT_STREQ(z->drop_why, "buffer_full");
    uint64_t t0 = ticks;
    run_for(600);
    ASSERT(ticks - t0 > 50); /* the loop kept turning */
    ASSERT_EQ(a->ups, 0);
    ASSERT_EQ(a->downs, 0);
    ASSERT_EQ(a->dropped, 0);

    ASSERT(redis_start(port) > 0);
    uint64_t started = now_ms();
    WAIT(a->state, 4000);
    ASSERT_EQ(a->ups, 1);
    printf("  connected %llu ms after redis-server answered\n",
           (unsigned long long)(a->up_at_ms - started));
    WAIT(a->nmsgs == 3, 2000);
    ASSERT_EQ(a->nmsgs, 3);
    ASSERT_STREQ(a->msgs[0].body, "q1");
    ASSERT_STREQ(a->msgs[1].body, "q2");
    ASSERT_STREQ(a->msgs[2].body, "q3");
    ASSERT_EQ(numsub(port, PREFIX ".late"), 1);

    /* once up, a node without a buffer still pipelines (64 KiB window) */
    WAIT(z->state, 3000);
    ASSERT_EQ(z->ups, 1);
    for (int i = 0; i < 50; i++)
        node_pub(z, "z", "pipelined");
    WAIT(z->nmsgs == 50, 2000);
    ASSERT_EQ(z->nmsgs, 50);
    ASSERT_EQ(z->dropped, 1);
}

/* Traffic for the kill test: node a publishes one message per 10 ms timer
 * turn and remembers, per sequence number, whether a was up and whether
 * the publish was dropped. */
#define KILL_MAX 4096
static struct {
    node_t *a;
    int seq;
    char was_up[KILL_MAX];
    char dropped[KILL_MAX];
} traffic;

static void on_traffic(uv_timer_t *h)
{
    HUB_UNUSED(h);
    if (traffic.seq >= KILL_MAX)
        return;
    char body[128];
    memset(body, 'p', sizeof(body));
    snprintf(body, sizeof(body), "%08d", traffic.seq);
    body[8] = '-';
    size_t before = traffic.a->dropped;
    hub_bus_redis.publish(traffic.a->impl, "t", (const uint8_t *)body, 100, NULL);
    traffic.was_up[traffic.seq] = (char)traffic.a->state;
    traffic.dropped[traffic.seq] = traffic.a->dropped != before;
    traffic.seq++;
}

/* Writes seq as 8 digits and a '-' at the start of body. */
static void put_seq(char *body, int seq)
{
    char tmp[16];
    snprintf(tmp, sizeof(tmp), "%08d-", seq);
    memcpy(body, tmp, 9);
}

static int seq_of(const rec_msg_t *m)
{
    return atoi(m->body);
}

FIXTURE(kill9_mid_traffic_reconnects_and_flushes_the_buffer)
{
    int port = free_port();
    pid_t pid = redis_start(port);
    ASSERT(pid > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    /* a small buffer: 17 publishes of 111 bytes (channel + payload) */
    node_opts_t o = { .publish_buffer = 1900 };
    node_t *a = NULL, *b = node_open(addr);
    ASSERT_EQ(node_open_opts(addr, &o, &a), 0);
    ASSERT(b);
    WAIT(a->state && b->state, 3000);
    ASSERT(a->state && b->state);
    hub_bus_redis.subscribe(a->impl, "t");
    hub_bus_redis.subscribe(b->impl, "t");
    ASSERT(wait_numsub(port, PREFIX ".t", 2, 2000));

    memset(&traffic, 0, sizeof(traffic));
    traffic.a = a;
    aux_start(on_traffic, 10);
    run_for(300);
    redis_kill9(pid);
    WAIT(!a->state && !b->state, 2000);
    ASSERT_EQ(a->downs, 1);
    ASSERT_EQ(b->downs, 1);
    run_for(1000); /* traffic while down: some queued, the rest dropped */
    pid = redis_start(port);
    ASSERT(pid > 0);
    uint64_t restarted = now_ms();
    WAIT(a->state && b->state, 5000);
    ASSERT(a->state && b->state);
    uint64_t both_up = now_ms();
    int first_after = traffic.seq;
    printf("  reconnected %llu ms (a) / %llu ms (b) after redis-server answered again\n",
           (unsigned long long)(a->up_at_ms - restarted),
           (unsigned long long)(b->up_at_ms - restarted));
    ASSERT(both_up - restarted < 3000);
    run_for(500);
    aux_close();
    int last = traffic.seq;
    run_for(300);

    /* a: in order, no duplicates */
    for (size_t i = 1; i < a->nmsgs; i++)
        if (seq_of(&a->msgs[i]) <= seq_of(&a->msgs[i - 1]))
            FAILF("a: seq %d after %d", seq_of(&a->msgs[i]), seq_of(&a->msgs[i - 1]));
    for (size_t i = 1; i < b->nmsgs; i++)
        if (seq_of(&b->msgs[i]) <= seq_of(&b->msgs[i - 1]))
            FAILF("b: seq %d after %d", seq_of(&b->msgs[i]), seq_of(&b->msgs[i - 1]));

    /* published while a was down: kept ones arrive, dropped ones never */
    static char got[KILL_MAX];
    memset(got, 0, sizeof(got));
    for (size_t i = 0; i < a->nmsgs; i++)
        got[seq_of(&a->msgs[i])] = 1;
    int kept = 0, dropped = 0;
    for (int s = 0; s < first_after; s++) {
        if (traffic.was_up[s])
            continue;
        if (traffic.dropped[s]) {
            dropped++;
            if (got[s])
                FAILF("seq %d was dropped but arrived", s);
        } else {
            kept++;
            if (!got[s])
                FAILF("seq %d was buffered while down but never arrived", s);
        }
    }
    printf("  while down: %d buffered and delivered, %d dropped (cap 1900 bytes)\n", kept,
           dropped);
    ASSERT(kept >= 10 && kept <= 19);
    ASSERT(dropped > 30);
    ASSERT_EQ((size_t)dropped, a->dropped);
    ASSERT_STREQ(a->drop_why, "buffer_full");
    ASSERT_EQ(b->dropped, 0);
    /* after both were up again, everything reaches both nodes */
    for (int s = first_after; s < last; s++)
        if (!got[s])
            FAILF("a: seq %d (after reconnect) missing", s);
    size_t b_after = 0;
    for (size_t i = 0; i < b->nmsgs; i++)
        b_after += seq_of(&b->msgs[i]) >= first_after;
    ASSERT_EQ(b_after, (size_t)(last - first_after));
    ASSERT(last - first_after > 20);
}

/* Traffic for the stop test: 20 publishes of 1000 bytes per 10 ms turn. */
static struct {
    node_t *a;
    int seq;
} burst;

static void on_burst(uv_timer_t *h)
{
    HUB_UNUSED(h);
    char body[1000];
    memset(body, 's', sizeof(body));
    for (int i = 0; i < 20; i++) {
        put_seq(body, burst.seq++);
        hub_bus_redis.publish(burst.a->impl, "s", (const uint8_t *)body, sizeof(body), NULL);
    }
}

FIXTURE(sigstop_keeps_the_loop_running_and_memory_bounded)
{
    int port = free_port();
    pid_t pid = redis_start(port);
    ASSERT(pid > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_opts_t o = { .publish_buffer = 64 * 1024 }; /* window 64 KiB + queue 64 KiB */
    node_t *a = NULL, *b = node_open(addr);
    ASSERT_EQ(node_open_opts(addr, &o, &a), 0);
    ASSERT(b);
    WAIT(a->state && b->state, 3000);
    hub_bus_redis.subscribe(b->impl, "s");
    ASSERT(wait_numsub(port, PREFIX ".s", 1, 2000));

    ASSERT_EQ(kill(pid, SIGSTOP), 0);
    memset(&burst, 0, sizeof(burst));
    burst.a = a;
    aux_start(on_burst, 10);
    uint64_t t0 = ticks, w0 = now_ms();
    run_for(2000);
    aux_close();
    uint64_t turns = ticks - t0, wall = now_ms() - w0;
    size_t published = (size_t)burst.seq, dropped = a->dropped;
    printf("  stopped 2 s: %llu timer turns in %llu ms, %zu published, %zu dropped, %zu held\n",
           (unsigned long long)turns, (unsigned long long)wall, published, dropped,
           published - dropped);
    ASSERT(turns > 50);              /* a 5 ms timer kept firing (~400 when idle) */
    ASSERT(published >= 1000);       /* ~4000 when idle; held is ~128 either way */
    ASSERT_EQ(a->downs, 0);          /* a stall is not a disconnect */
    ASSERT_STREQ(a->drop_why, "buffer_full");
    /* held = what fits in window + queue: (64 KiB + 64 KiB) / 1011 bytes */
    ASSERT(published - dropped <= 2 * 65536 / 1011 + 2);
    ASSERT(published - dropped >= 65536 / 1011);

    ASSERT_EQ(kill(pid, SIGCONT), 0);
    WAIT(b->nmsgs >= published - dropped, 5000);
    run_for(200);
    ASSERT_EQ(b->nmsgs, published - dropped); /* everything held, nothing else */
    for (size_t i = 1; i < b->nmsgs; i++)
        ASSERT(seq_of(&b->msgs[i]) > seq_of(&b->msgs[i - 1]));
    ASSERT_EQ(a->downs, 0);
    ASSERT_EQ(b->downs, 0);
}

/* kill -9 of a stopped server with unread bytes in its socket makes the
 * kernel reset the connection: the client sees POLLERR, which libuv
 * reports as an error status on the poll handle (and stops it). Publishes
 * in flight are lost (never resent), queued ones go out after the
 * reconnect. */
FIXTURE(connection_reset_loses_in_flight_keeps_queued)
{
    int port = free_port();
    pid_t pid = redis_start(port);
    ASSERT(pid > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_t *a = node_open(addr); /* publish_buffer 64 KiB: window 64 KiB */
    ASSERT(a);
    WAIT(a->state, 3000);
    hub_bus_redis.subscribe(a->impl, "rst");
    ASSERT(wait_numsub(port, PREFIX ".rst", 1, 2000));
    ASSERT_EQ(kill(pid, SIGSTOP), 0);
    /* 100 x (13 + 1000) bytes: the first 64 fit the window (in flight),
     * the other 36 wait in the queue */
    char body[1000];
    memset(body, 'r', sizeof(body));
    for (int i = 0; i < 100; i++) {
        put_seq(body, i);
        hub_bus_redis.publish(a->impl, "rst", (const uint8_t *)body, sizeof(body), NULL);
    }
    run_for(100); /* written, never read */
    redis_kill9(pid);
    WAIT(a->downs == 1, 2000);
    ASSERT_EQ(a->downs, 1);
    ASSERT(redis_start(port) > 0);
    WAIT(a->state, 3000);
    ASSERT_EQ(a->ups, 2);
    WAIT(a->nmsgs == 36, 2000);
    run_for(100);
    ASSERT_EQ(a->nmsgs, 36);
    for (int i = 0; i < 36; i++)
        ASSERT_EQ(seq_of(&a->msgs[i]), 64 + i);
    ASSERT_EQ(a->dropped, 0);
    node_pub(a, "rst", "after");
    WAIT(a->nmsgs == 37, 2000);
    ASSERT_EQ(a->nmsgs, 37);
    ASSERT_STREQ(a->msgs[36].body, "after");
}

FIXTURE(stopped_server_at_connect_times_out_and_retries)
{
    int port = free_port();
    pid_t pid = redis_start(port);
    ASSERT(pid > 0);
    ASSERT_EQ(kill(pid, SIGSTOP), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_opts_t o = { .connect_timeout = 200 };
    node_t *a = NULL;
    ASSERT_EQ(node_open_opts(addr, &o, &a), 0);
    run_for(1000); /* TCP connects (the kernel accepts), PING never answered */
    ASSERT_EQ(a->ups, 0);
    ASSERT_EQ(kill(pid, SIGCONT), 0);
    uint64_t t0 = now_ms();
    WAIT(a->state, 4000);
    ASSERT_EQ(a->ups, 1);
    printf("  up %llu ms after SIGCONT\n", (unsigned long long)(a->up_at_ms - t0));
}

FIXTURE(subscriber_disconnected_by_the_server_reconnects)
{
    int port = free_port();
    ASSERT(redis_start(port) > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    node_t *a = node_open(addr);
    ASSERT(a);
    WAIT(a->state, 3000);
    hub_bus_redis.subscribe(a->impl, "big");
    ASSERT(wait_numsub(port, PREFIX ".big", 1, 2000));
    redisReply *r = redis_cmd(port, "CONFIG SET client-output-buffer-limit %s",
                         "pubsub 1024 1024 0");
    ASSERT(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    /* a reply far over the pub/sub output limit: Redis drops the subscriber */
    size_t n = 1 << 20;
    char *big = malloc(n);
    ASSERT(big);
    memset(big, 'b', n);
    long long k = raw_publish(port, PREFIX ".big", big, n);
    free(big);
    ASSERT_EQ(k, 1);
    WAIT(a->downs == 1, 2000);
    ASSERT_EQ(a->downs, 1);
    WAIT(a->state, 3000);
    ASSERT_EQ(a->ups, 2);
    ASSERT(wait_numsub(port, PREFIX ".big", 1, 2000)); /* resubscribed */
    ASSERT_EQ(raw_publish(port, PREFIX ".big", "small", 5), 1);
    WAIT(count_subject(a, "big") >= 1 && a->msgs[a->nmsgs - 1].n == 5, 2000);
    ASSERT_STREQ(a->msgs[a->nmsgs - 1].body, "small");
}

FIXTURE(password_from_url_or_config)
{
    int port = free_port();
    static const char *const extra[] = { "--requirepass", "p@ss:w0rd", NULL };
    ASSERT(redis_start_on("127.0.0.1", port, "p@ss:w0rd", extra) > 0);
    char url[128], acl[128], plain[64], wrong[64];
    snprintf(url, sizeof(url), "redis://:p%%40ss%%3Aw0rd@127.0.0.1:%d/0", port);
    snprintf(acl, sizeof(acl), "redis://default:p%%40ss%%3Aw0rd@127.0.0.1:%d", port);
    snprintf(plain, sizeof(plain), "127.0.0.1:%d", port);
    snprintf(wrong, sizeof(wrong), "redis://:nope@127.0.0.1:%d", port);
    node_opts_t withpass = { .password = "p@ss:w0rd" };
    node_t *a = node_open(url), *u = node_open(acl), *c = NULL, *none = node_open(plain),
           *bad = node_open(wrong);
    ASSERT_EQ(node_open_opts(plain, &withpass, &c), 0);
    ASSERT(a && u && none && bad);
    WAIT(a->state && u->state && c->state, 3000);
    ASSERT_EQ(a->ups, 1);
    ASSERT_EQ(u->ups, 1);
    ASSERT_EQ(c->ups, 1);
    hub_bus_redis.subscribe(a->impl, "secret");
    check_pass = "p@ss:w0rd";
    ASSERT(wait_numsub(port, PREFIX ".secret", 1, 2000));
    node_pub(c, "secret", "ok");
    WAIT(a->nmsgs == 1, 2000);
    ASSERT_EQ(a->nmsgs, 1);
    ASSERT_STREQ(a->msgs[0].body, "ok");
    run_for(700); /* several attempts each */
    ASSERT_EQ(none->ups, 0);
    ASSERT_EQ(bad->ups, 0);
}

FIXTURE(ipv6_loopback)
{
    if (!loopback6()) {
        printf("  (no IPv6 loopback here: skipped)\n");
        return;
    }
    int port = free_port();
    ASSERT(redis_start_on("::1", port, NULL, NULL) > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "[::1]:%d", port);
    node_t *a = node_open(addr);
    ASSERT(a);
    WAIT(a->state, 3000);
    ASSERT_EQ(a->ups, 1);
    hub_bus_redis.subscribe(a->impl, "v6");
    check_host = "::1";
    ASSERT(wait_numsub(port, PREFIX ".v6", 1, 2000));
    node_pub(a, "v6", "hi");
    WAIT(a->nmsgs == 1, 2000);
    ASSERT_EQ(a->nmsgs, 1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon does (server.c) */
    hub_log_setup(HUB_LOG_WARN, HUB_LOG_TEXT);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/bus_redis_test.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(bad_addresses_are_einval);
    RUN(connects_and_delivers_to_itself);
    RUN(two_nodes_exchange_messages_in_order);
    RUN(unsubscribe_stops_delivery);
    RUN(server_down_at_open_then_appears);
    RUN(kill9_mid_traffic_reconnects_and_flushes_the_buffer);
    RUN(sigstop_keeps_the_loop_running_and_memory_bounded);
    RUN(connection_reset_loses_in_flight_keeps_queued);
    RUN(stopped_server_at_connect_times_out_and_retries);
    RUN(subscriber_disconnected_by_the_server_reconnects);
    RUN(password_from_url_or_config);
    RUN(ipv6_loopback);
    kill_all_redis();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    HARNESS_MAIN_END();
}
