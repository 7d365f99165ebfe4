/* metrics.h: Prometheus metrics. Each thread that counts owns one
 * hub_metrics_t (a worker: w->metrics; the main thread: hub_metrics_main();
 * the cluster's bus thread: hub_metrics_bus())
 * and is the only thread that ever writes it. A scrape (GET /metrics, on
 * whichever worker accepted it) reads every worker's struct and sums.
 *
 * Why no locks and no atomic read-modify-write on the hot path: every field
 * is a C11 atomic that its single writer updates with a relaxed load and a
 * relaxed store (hub_mc_add). On x86-64 and arm64 both compile to plain
 * moves: no lock prefix, no fence, no cache line bouncing between workers.
 * The scraper's relaxed loads are race-free by the C11 memory model (no
 * torn 64-bit read, no undefined behaviour, nothing for TSan to report)
 * instead of relying on "aligned 64-bit moves are atomic on x86-64". What a
 * scrape gives up is cross-field consistency: it may see a bucket
 * incremented before the histogram's sum; every value is still monotonic
 * and _count is derived from the buckets, so +Inf == _count always holds.
 *
 * Label sets are fixed at compile time (message types, close codes, error
 * codes, auth reasons, each with "other"), so nothing a client sends can
 * create a series. Any thread, as stated per function. */
#ifndef HUB_METRICS_H
#define HUB_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "http.h"

/* Message types as metric labels (hub_frame_t.kind, messages received and
 * sent, handler duration). 0 is "not a message" (HTTP responses, control
 * frames) and is never exposed. */
enum {
    HUB_MT_NONE = 0,
    /* client request types (the built-in handlers) */
    HUB_MT_PING, HUB_MT_AUTHENTICATE, HUB_MT_JOIN_ROOM, HUB_MT_LEAVE_ROOM, HUB_MT_ROOM_MESSAGE,
    HUB_MT_DIRECT_MESSAGE, HUB_MT_CREATE_ROOM, HUB_MT_DELETE_ROOM, HUB_MT_LIST_ROOMS,
    HUB_MT_ROOM_MEMBERS, HUB_MT_BROADCAST,
    /* types only the server sends */
    HUB_MT_PONG, HUB_MT_AUTHENTICATED, HUB_MT_ROOM_JOINED, HUB_MT_ROOM_LEFT, HUB_MT_ACK,
    HUB_MT_MEMBER_JOINED, HUB_MT_MEMBER_LEFT, HUB_MT_ROOM_CREATED, HUB_MT_ROOM_DELETED,
    HUB_MT_ROOMS, HUB_MT_ERROR,
    HUB_MT_OTHER,   /* any other type name */
    HUB_MT_INVALID, /* received: no message_type could be read (bad JSON, ...) */
    HUB_MT_COUNT
};

/* WebSocket close codes as labels (gohub_connections_closed_total). */
enum {
    HUB_MC_1000, HUB_MC_1001, HUB_MC_1002, HUB_MC_1003, HUB_MC_1005, HUB_MC_1006, HUB_MC_1007,
    HUB_MC_1008, HUB_MC_1009, HUB_MC_1011, HUB_MC_1013, HUB_MC_OTHER, HUB_MC_NCODES
};

/* Why an outbound message was not delivered (gohub_messages_dropped_total). */
enum {
    HUB_DROP_QUEUE_FULL, /* over limits.max_outbound_bytes: the connection closes with 1013 */
    HUB_DROP_CLOSED,     /* the connection was closing or gone */
    HUB_DROP_NREASONS
};

/* Why a cluster bus message was dropped (gohub_cluster_messages_dropped_total):
 * outbound ones by the transport, inbound ones by the core. */
enum {
    HUB_BD_BUFFER_FULL,      /* over cluster.publish_buffer while the bus is down or slow */
    HUB_BD_BUS_ERROR,        /* refused or failed by the bus server */
    HUB_BD_OUT_OF_MEMORY,
    HUB_BD_SLOW_CONSUMER,    /* inbound, more than this node kept up with */
    HUB_BD_MALFORMED,        /* inbound, not a gohub bus message */
    HUB_BD_DUPLICATE,        /* inbound, seen before (JetStream redelivery, two paths) */
    HUB_BD_NODE_ID_CONFLICT, /* inbound, from a second process with a node_id in use */
    HUB_BD_TOO_MANY_NODES,   /* inbound, from a node the full node table has no room for */
    HUB_BD_NREASONS
};

#define HUB_ME_NCODES 20     /* the protocol's 19 error codes + "other" */
#define HUB_MA_NREASONS 13   /* auth failure reasons (auth.h names) + "other" */
#define HUB_MD_BUCKETS 15    /* handler duration bounds */
#define HUB_MS_BUCKETS 8     /* message size bounds */

typedef _Atomic uint64_t hub_mcounter_t;

/* One thread's counters. Histogram buckets are per bucket (not
 * cumulative): [i] counts observations <= bound i and > bound i-1; the last
 * slot counts those above every bound. Zero-initialised is the start. */
typedef struct hub_metrics_s {
    hub_mcounter_t conns_opened;
    hub_mcounter_t conns_closed[HUB_MC_NCODES];
    hub_mcounter_t received[HUB_MT_COUNT];
    hub_mcounter_t sent[HUB_MT_COUNT];           /* per recipient */
    hub_mcounter_t dropped[HUB_DROP_NREASONS];
    hub_mcounter_t slow_consumers;
    hub_mcounter_t room_joins, room_leaves;
    hub_mcounter_t errors[HUB_ME_NCODES];
    hub_mcounter_t auth_ok;
    hub_mcounter_t auth_failed[HUB_MA_NREASONS];
    hub_mcounter_t reloads_ok, reloads_failed;
    hub_mcounter_t queue_bytes;                  /* a gauge, set by the worker's tick */
    hub_mcounter_t size_buckets[HUB_MS_BUCKETS + 1];
    hub_mcounter_t size_sum;                     /* bytes */
    hub_mcounter_t dur_buckets[HUB_MT_COUNT][HUB_MD_BUCKETS + 1];
    hub_mcounter_t dur_sum[HUB_MT_COUNT];        /* nanoseconds */
    /* the cluster bus thread's */
    hub_mcounter_t bus_published, bus_received, bus_reconnects;
    hub_mcounter_t bus_dropped[HUB_BD_NREASONS];
} hub_metrics_t;

/* The calling thread's own struct (set by hub_metrics_bind), or a shared
 * sink for threads that have none (tests, gohub -t): for code such as the
 * registry that has no worker at hand. */
extern _Thread_local hub_metrics_t *hub_metrics_tls;
hub_metrics_t *hub_metrics_sink(void);

static inline hub_metrics_t *hub_metrics_here(void)
{
    hub_metrics_t *m = hub_metrics_tls;
    return hub_likely(m != NULL) ? m : hub_metrics_sink();
}

/* The calling thread becomes the writer of m (worker start). */
static inline void hub_metrics_bind(hub_metrics_t *m)
{
    hub_metrics_tls = m;
}

/* The main thread's struct (Lua reloads). Main thread writes; any reads. */
hub_metrics_t *hub_metrics_main(void);

/* The cluster bus thread's struct (rooms another node deleted, ...). */
hub_metrics_t *hub_metrics_bus(void);

/* Adds n. Only the owning thread may call it on its struct: a load and a
 * store, no read-modify-write instruction (see the file comment). */
static inline void hub_mc_add(hub_mcounter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Sets a gauge (owning thread only). */
static inline void hub_mc_set(hub_mcounter_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

static inline uint64_t hub_mc_get(const hub_mcounter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* The label index of a message type name (len bytes, no NUL needed):
 * HUB_MT_OTHER for names outside the fixed set. Pure; any thread. */
int hub_metrics_type(const char *name, size_t len);

/* The label text of a HUB_MT_* index. */
const char *hub_metrics_type_name(int type);

/* Owner thread: a data message of n payload bytes arrived (every one,
 * rate-limited ones included). */
void hub_metrics_message_size(hub_metrics_t *m, size_t n);

/* Owner thread: a received message of type (HUB_MT_*) was handled in ns
 * nanoseconds (messages received, handler duration). */
void hub_metrics_handled(hub_metrics_t *m, int type, uint64_t ns);

/* Owner thread: a WebSocket connection ended with close code (0 = none:
 * counted as 1006, the connection dropped without a close frame). */
void hub_metrics_closed(hub_metrics_t *m, unsigned code);

/* Owner thread: an error envelope with protocol code was sent. */
void hub_metrics_error(hub_metrics_t *m, int code);

/* Owner thread: an authentication attempt (a handshake token or an
 * in-band authenticate) succeeded (ok) or failed for reason, one of the
 * stable names of hub_auth_reason_name ("expired", "bad_signature", ...;
 * an unknown name counts as "other"). m NULL: the calling thread's. */
void hub_metrics_auth(hub_metrics_t *m, int ok, const char *reason);

/* Main thread: a Lua reload ended. */
void hub_metrics_reload(int ok);

/* ---- scraping ------------------------------------------------------------ */

/* Process figures from /proc/self (process_* metrics). */
typedef struct {
    double cpu_seconds;
    uint64_t rss_bytes, vsize_bytes;
    uint64_t open_fds, max_fds;
    double start_time;       /* seconds since the epoch */
} hub_proc_stats_t;

/* Reads the calling process's figures; fields it cannot read stay 0.
 * Returns 0, or -1 when /proc/self/stat is unreadable. Any thread. */
int hub_proc_stats(hub_proc_stats_t *out);

/* The sum of several structs, in plain integers (a scrape's view). */
typedef struct {
    uint64_t conns_opened;
    uint64_t conns_closed[HUB_MC_NCODES];
    uint64_t received[HUB_MT_COUNT];
    uint64_t sent[HUB_MT_COUNT];
    uint64_t dropped[HUB_DROP_NREASONS];
    uint64_t slow_consumers;
    uint64_t room_joins, room_leaves;
    uint64_t errors[HUB_ME_NCODES];
    uint64_t auth_ok;
    uint64_t auth_failed[HUB_MA_NREASONS];
    uint64_t reloads_ok, reloads_failed;
    uint64_t queue_bytes;
    uint64_t size_buckets[HUB_MS_BUCKETS + 1];
    uint64_t size_sum;
    uint64_t dur_buckets[HUB_MT_COUNT][HUB_MD_BUCKETS + 1];
    uint64_t dur_sum[HUB_MT_COUNT];
    uint64_t bus_published, bus_received, bus_reconnects;
    uint64_t bus_dropped[HUB_BD_NREASONS];
    /* gauges read at scrape time */
    uint64_t connected_clients;
    uint64_t rooms;
    uint64_t bus_up;         /* 1 while the cluster bus is connected */
    uint64_t cluster_nodes;  /* live nodes in this node's view, itself included */
} hub_metrics_snap_t;

/* Adds m's current values into s (relaxed loads). Any thread. */
void hub_metrics_accumulate(hub_metrics_snap_t *s, const hub_metrics_t *m);

/* Writes the text exposition (format 0.0.4) of s and p, with the info
 * labels version and node_id (escaped). Returns a malloc'd buffer (caller
 * frees) and its length in *len, or NULL on ENOMEM. Pure; any thread. */
char *hub_metrics_format(const hub_metrics_snap_t *s, const hub_proc_stats_t *p,
                         const char *version, const char *node_id, size_t *len);

/* Worker thread: a scrape of the whole node: every worker's struct and
 * the main thread's, the connection and room gauges, /proc/self. Returns
 * what hub_metrics_format returns. */
char *hub_metrics_render(hub_server_t *srv, size_t *len);

/* Worker thread: answers GET/HEAD /metrics on c (405 with Allow for other
 * methods; 500 when out of memory). */
void hub_metrics_serve(hub_conn_t *c, const hub_http_req_t *r, int keep_alive);

#endif
