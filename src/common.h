/* common.h: error codes, small macros and forward declarations shared by every
 * module. No module state lives here. Safe to include from any thread. */
#ifndef HUB_COMMON_H
#define HUB_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

/* Error codes: 0 is success, negative is failure. Values below are libuv's
 * (which are negated errno values) so a uv status passes through unchanged;
 * gohub's own codes sit in a reserved range below -4100. */
#define HUB_OK          0
#define HUB_ENOMEM      UV_ENOMEM
#define HUB_EINVAL      UV_EINVAL
#define HUB_EAGAIN      UV_EAGAIN
#define HUB_ENOENT      UV_ENOENT
#define HUB_E2BIG       UV_E2BIG
#define HUB_ECLOSED     (-4101) /* the connection is closing or gone */
#define HUB_EFULL       (-4102) /* a bounded queue is over its limit */
#define HUB_ECONFIG     (-4103) /* invalid configuration */
#define HUB_EPROTO      (-4104) /* peer violated the protocol */
#define HUB_EEXIST      UV_EEXIST
#define HUB_ENOTFOUND   UV_ENOENT
#define HUB_EALREADY    (-4105) /* already a member */
#define HUB_ENOTMEMBER  (-4106) /* not a member */
#define HUB_ETOOMANY    (-4107) /* per-client room limit */
#define HUB_EROOMFULL   (-4108) /* room at max_clients */
#define HUB_EOFFLINE    (-4109) /* no such live connection */
#define HUB_ESEAT       (-4110) /* the room's owner node must grant a seat */

/* Returns a static string for any HUB_E* or UV_E* code. */
const char *hub_strerror(int err);

#define HUB_UNUSED(x) ((void)(x))
#define hub_likely(x)   __builtin_expect(!!(x), 1)
#define hub_unlikely(x) __builtin_expect(!!(x), 0)
#define hub_container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#define HUB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* 2^53: every integer up to it is exact in a double, so in a Lua number and
 * in any JSON reader's numbers. */
#define HUB_EXACT_MAX (1LL << 53)

/* Invariant check that stays on in release builds. Never for input. */
#define hub_assert(cond)                                                        \
    do {                                                                        \
        if (hub_unlikely(!(cond))) {                                            \
            fprintf(stderr, "gohub: assertion failed: %s (%s:%d)\n", #cond,     \
                    __FILE__, __LINE__);                                        \
            abort();                                                            \
        }                                                                       \
    } while (0)

/* uv_buf_t takes char *; frame bytes are const. The one cast lives here. */
static inline uv_buf_t hub_uv_buf(const void *p, size_t n)
{
    return uv_buf_init((char *)(uintptr_t)p, (unsigned int)n);
}

#define GOHUB_VERSION "0.1.0"

typedef struct hub_conn_s hub_conn_t;
typedef struct hub_worker_s hub_worker_t;
typedef struct hub_server_s hub_server_t;
typedef struct hub_config_s hub_config_t;
typedef struct hub_frame_s hub_frame_t;
typedef struct hub_outq_node_s hub_outq_node_t;
typedef struct hub_ws_slot_s hub_ws_slot_t;

#endif
