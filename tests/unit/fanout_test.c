/* fanout_test.c: delivery through the registry on a real worker loop run in
 * this thread, with loopback clients: every connection of a user (the path
 * direct_message takes for a user id; end to end it needs tokens, which
 * arrive with the auth issue), room members with the sender excluded, one
 * frame shared by every recipient, nothing to non-members. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "frame.h"
#include "harness.h"
#include "log.h"
#include "registry.h"
#include "server.h"
#include "worker.h"

static hub_server_t srv;
static int port;

static void spin(int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&srv.workers[0].loop, UV_RUN_NOWAIT);
}

static int setup(void)
{
    char err[256];
    memset(&srv, 0, sizeof(srv));
    setenv("GOHUB_LUA_PATH", "lua", 1);
    srv.cfg = hub_config_load(NULL, err, sizeof(err));
    unsetenv("GOHUB_LUA_PATH");
    if (srv.cfg == NULL)
        return -1;
    srv.nworkers = 1;
    srv.max_connections = 100;
    snprintf(srv.node_id, sizeof(srv.node_id), "test");
    srv.workers = calloc(1, sizeof(hub_worker_t));
    if (hub_reg_init(1) != 0)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    port = ntohs(a.sin_port);
    uint8_t scope = HUB_SCOPE_WS;
    return hub_worker_init(&srv.workers[0], &srv, 0, &fd, &scope, 1);
}

static void teardown(void)
{
    hub_worker_t *w = &srv.workers[0];
    hub_worker_stop(w, 1);
    while (uv_run(&w->loop, UV_RUN_NOWAIT) != 0)
        ;
    hub_worker_destroy(w);
    free(srv.workers);
    hub_reg_free();
    hub_config_free(srv.cfg);
}

/* A connected client and its server-side connection, in the WebSocket
 * phase and registered under user_id. */
static int client(const char *user_id, hub_conn_t **out)
{
    hub_worker_t *w = &srv.workers[0];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    uint64_t before = w->nconns;
    for (int i = 0; i < 1000 && w->nconns == before; i++)
        spin(1);
    hub_conn_t *c = w->conns;
    c->state = HUB_CONN_WS; /* as after an upgrade */
    if (hub_reg_client_add(c->id, 0, user_id) != 0)
        return -1;
    *out = c;
    return fd;
}

/* Bytes readable on fd within ~200 ms of loop turns. */
static ssize_t drain(int fd, uint8_t *buf, size_t cap)
{
    size_t got = 0;
    for (int i = 0; i < 40; i++) {
        spin(2);
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 5) > 0) {
            ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
            if (n > 0)
                got += (size_t)n;
        }
    }
    return (ssize_t)got;
}

TEST(every_connection_of_a_user)
{
    hub_conn_t *a1, *a2, *b;
    int fa1 = client("alice", &a1), fa2 = client("alice", &a2), fb = client("bob", &b);
    ASSERT(fa1 >= 0 && fa2 >= 0 && fb >= 0);
    hub_frame_t *f = hub_frame_ws(HUB_WS_OP_TEXT, "hello", 5);
    int forwarded = -1;
    ASSERT_EQ(hub_fanout_user(&srv.workers[0], "alice", f, &forwarded), 2);
    ASSERT_EQ(forwarded, 0);            /* no cluster */
    ASSERT_EQ(f->refcnt, 3);            /* one frame, referenced by both queues */
    uint8_t buf[64];
    ASSERT_EQ(drain(fa1, buf, sizeof(buf)), 7);
    ASSERT_MEMEQ(buf + 2, "hello", 5);
    ASSERT_EQ(drain(fa2, buf, sizeof(buf)), 7);
    ASSERT_EQ(drain(fb, buf, sizeof(buf)), 0);
    ASSERT_EQ(f->refcnt, 1);
    ASSERT_EQ(hub_fanout_user(&srv.workers[0], "carol", f, &forwarded), 0);
    hub_frame_release(f);
    close(fa1);
    close(fa2);
    close(fb);
}

TEST(room_members_except_the_sender)
{
    hub_conn_t *c[3];
    int fd[3];
    for (int i = 0; i < 3; i++)
        ASSERT((fd[i] = client(NULL, &c[i])) >= 0);
    ASSERT_EQ(hub_reg_room_join("r", c[0]->id, 1, 0, 0, NULL), 1);
    ASSERT_EQ(hub_reg_room_join("r", c[1]->id, 1, 0, 0, NULL), 2);
    hub_frame_t *f = hub_frame_ws(HUB_WS_OP_TEXT, "room!", 5);
    ASSERT_EQ(hub_fanout_room(&srv.workers[0], "r", f, c[0]->id), 1); /* c[1] only */
    uint8_t buf[64];
    ASSERT_EQ(drain(fd[1], buf, sizeof(buf)), 7);
    ASSERT_MEMEQ(buf + 2, "room!", 5);
    ASSERT_EQ(drain(fd[0], buf, sizeof(buf)), 0); /* the sender */
    ASSERT_EQ(drain(fd[2], buf, sizeof(buf)), 0); /* not a member */
    ASSERT_EQ(hub_fanout_room(&srv.workers[0], "nope", f, 0), HUB_ENOTFOUND);
    hub_frame_release(f);
    for (int i = 0; i < 3; i++)
        close(fd[i]);
}

int main(void)
{
    hub_log_setup(HUB_LOG_ERROR, HUB_LOG_TEXT);
    if (setup() != 0) {
        printf("setup failed\n");
        return 1;
    }
    RUN(every_connection_of_a_user);
    RUN(room_members_except_the_sender);
    teardown();
    HARNESS_MAIN_END();
}
