/* conn.h: one client TCP connection and its lifecycle: HTTP phase (llhttp) →
 * WebSocket (wslay, see ws.h) → closing. Owns the ordered outbound queue of
 * frame references. Only the owning worker's thread touches a connection;
 * other threads and Lua refer to it by id.
 *
 * Lifetime: allocated on accept, freed only in its uv_close callback. A close
 * requested mid-walk (hub_conn_abort) is deferred to the worker's prepare
 * phase, so a pointer stays valid until the loop's next turn. */
#ifndef HUB_CONN_H
#define HUB_CONN_H

#include <stdint.h>
#include <uv.h>

#include "common.h"
#include "frame.h"

enum { HUB_CONN_HTTP = 0, HUB_CONN_WS, HUB_CONN_CLOSING };

/* flags */
#define HUB_CONN_F_PENDING  0x01 /* on the worker's flush list */
#define HUB_CONN_F_CLOSED   0x02 /* hard close requested: no more I/O */
#define HUB_CONN_F_WRITING  0x04 /* a uv_write is in flight */
#define HUB_CONN_F_SHUTDOWN 0x08 /* our FIN is sent (lingering close) */
#define HUB_CONN_F_COUNTED  0x10 /* counted in the server's WebSocket total */
#define HUB_CONN_F_PING     0x20 /* a ping is outstanding: timer_ms = pong deadline */
#define HUB_CONN_F_INMSG    0x40 /* inside a fragmented inbound message */
#define HUB_CONN_F_NOMORE   0x80 /* a close frame is queued: no data after it */
#define HUB_CONN_F_WAITING  0x100 /* input paused: an HTTP request waits for another
                                     thread's answer, or a Lua handler's queue is full */
#define HUB_CONN_F_ENDED    0x200 /* left its rooms and the registry; hooks ran */

typedef struct hub_http_s hub_http_t;
typedef struct hub_wait_s hub_wait_t; /* lua_vm.c */

struct hub_conn_s {
    uv_tcp_t tcp;
    hub_worker_t *w;
    uint64_t id;
    hub_conn_t *prev, *next;      /* worker's list of every connection */
    hub_conn_t *pend_next;        /* worker's flush list (F_PENDING) */
    hub_conn_t *close_next;       /* worker's to-close list (F_CLOSED) */
    hub_http_t *http;             /* HTTP phase only */
    hub_ws_slot_t *ws;            /* wslay state, borrowed while inside a frame */
    hub_outq_node_t *oq_head, *oq_tail;
    uint64_t oq_bytes;            /* queued + in-flight bytes not yet written */
    uint32_t oq_off;              /* bytes of oq_head already written */
    uint64_t timer_ms;            /* HTTP: header deadline; WS: next ping or, with
                                     F_PING, pong deadline; CLOSING: hard close */
    uint64_t frame_left;          /* WS: bytes of the inbound frame wslay has not seen */
    uint64_t msg_bytes;           /* WS: payload bytes of the inbound message so far */
    uint64_t rl_tat_us;           /* WS: message rate limiter state (ratelimit.h) */
    uint32_t rl_strikes;          /* WS: messages refused in the current window */
    uint32_t rl_window_s;         /* WS: start of that 10 s window (loop seconds) */
    uint16_t flags;
    uint16_t close_code;          /* first close code sent or received; 0 = none yet */
    uint8_t state;
    uint8_t route;                /* HUB_ROUTE_* of the WebSocket endpoint */
    uint8_t scope;                /* HUB_SCOPE_* of the address it came in on */
    uint8_t stash_len;
    uint8_t stash[HUB_WS_MAX_HEADER]; /* a partial inbound frame header */
    int lua_ref;                  /* the connection's `client` table in the VM, or -2 */
    struct hub_identity_s *ident; /* owned: the verified token's identity (auth.h);
                                     NULL = anonymous. Freed with the connection */
    uint32_t lua_gen;             /* generation of the VM lua_ref belongs to */
    hub_wait_t *wait;             /* owned: a handler waiting (a seat) and what came
                                     in meanwhile; NULL = none (lua_vm.c) */
};

/* Longest client id: node id (64) + '-' + 16 hex digits. */
#define HUB_CLIENT_ID_MAX 96

/* Buffer size for any user id: a token's (at most HUB_AUTH_USER_ID_MAX =
 * 128 bytes, auth.h) or "anon-<client id>", plus the NUL. */
#define HUB_USER_ID_MAX 136

/* Writes the client id of connection id on this node; returns its length. */
size_t hub_client_id_format(const hub_server_t *srv, uint64_t id, char *buf, size_t len);

/* Writes c's client id ("<node_id>-<hex conn id>"); returns its length. */
size_t hub_conn_client_id(const hub_conn_t *c, char *buf, size_t len);

/* Writes the anonymous user id of connection id ("anon-<client id>");
 * returns its length. */
size_t hub_anon_user_id(const hub_server_t *srv, uint64_t id, char *buf, size_t len);

/* Writes c's user id (the token's, or "anon-<client id>" when anonymous);
 * returns its length. */
size_t hub_conn_user_id(const hub_conn_t *c, char *buf, size_t len);

/* Gives c the identity id (takes ownership; NULL = anonymous again) and
 * moves c to id's user in the registry, for send_user and member lists.
 * Returns 0 and frees the previous identity; on HUB_ENOMEM or HUB_EOFFLINE
 * (c is not registered) c keeps its identity and id is freed. */
int hub_conn_set_identity(hub_conn_t *c, struct hub_identity_s *id);

/* The connection id inside a client id of this node, or 0 when s is not one
 * (another node's, or malformed). */
uint64_t hub_client_id_parse(const hub_server_t *srv, const char *s, size_t len);

/* Accepts a pending connection on server (one of the worker's listeners,
 * serving scope); one that fails after that is logged and closed. Returns
 * 0, or HUB_ENOMEM when nothing was accepted: the connection is still
 * pending and libuv watches the listener again only once it is accepted,
 * so the caller must try again later. */
int hub_conn_accept(hub_worker_t *w, uv_stream_t *server, uint8_t scope);

/* Queues a reference to f (the caller keeps its own). Returns 0;
 * HUB_ECLOSED when c is closing; HUB_EFULL when the queue went past
 * limits.max_outbound_bytes, in which case c is being closed with 1013. */
int hub_conn_send(hub_conn_t *c, hub_frame_t *f);

/* Queues bytes that are exempt from the outbound limit (HTTP responses,
 * close frames): takes over the caller's reference to f. */
void hub_conn_send_raw(hub_conn_t *c, hub_frame_t *f);

/* Closes gracefully: a WebSocket gets a close frame with code and reason,
 * then a lingering close bounded by server.close_timeout; an HTTP
 * connection is closed at once. Idempotent. */
void hub_conn_close(hub_conn_t *c, uint16_t code, const char *reason);

/* Hard close: no more reads or writes; uv_close runs in the worker's prepare
 * phase. Idempotent. c stays valid until then. */
void hub_conn_abort(hub_conn_t *c);

/* Enters the lingering close: once the queue drains, FIN is sent, input is
 * discarded until EOF or the close timeout. */
void hub_conn_linger(hub_conn_t *c);

/* Worker prepare phase: writes what is queued (uv_try_write, then one
 * uv_write over an iovec for the rest). */
void hub_conn_flush(hub_conn_t *c);

/* Worker timer: applies the header deadline, server pings, the pong timeout,
 * the lingering-close deadline and token expiry. now is uv_now(), wall_ms
 * hub_now_ms() (read once per tick). */
void hub_conn_tick(hub_conn_t *c, uint64_t now, uint64_t wall_ms);

/* A complete inbound WebSocket data message (called by ws.c). */
void hub_conn_on_message(hub_conn_t *c, int opcode, const uint8_t *p, size_t n);

/* Frees the queued frame references of c (worker teardown and close_cb). */
void hub_conn_drop_queue(hub_conn_t *c);



/* Pauses input (HUB_CONN_F_WAITING) until hub_conn_resume. */
void hub_conn_pause(hub_conn_t *c);

/* Ends a wait (HUB_CONN_F_WAITING): reads again, so a lingering close
 * after the answer sees the client's EOF. */
void hub_conn_resume(hub_conn_t *c);

/* Worker prepare phase (never inside a registry walk): a WebSocket
 * connection that started closing leaves its rooms and the registry, and
 * hooks.on_disconnect runs. Once per connection; on_close covers the rest. */
void hub_conn_end(hub_conn_t *c);

/* Worker prepare phase: calls uv_close on an aborted connection. */
void hub_conn_close_now(hub_conn_t *c);

/* Frees the worker's free lists of queue nodes and write requests. */
void hub_conn_pools_free(hub_worker_t *w);

#endif
