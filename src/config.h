/* config.h: the daemon's configuration, an immutable snapshot built once by
 * the main thread from defaults, the YAML file and GOHUB_* environment
 * variables. Workers read it and never write it. */
#ifndef HUB_CONFIG_H
#define HUB_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"

typedef struct {
    char **items; /* owned, each NUL-terminated */
    size_t n;
} hub_strlist_t;

struct hub_config_s {
    /* server.* */
    char *server_addr;            /* "host:port", ":port" means all IPv4 addresses */
    int server_workers;           /* 0 = number of CPUs */
    char *server_node_id;         /* "" = generated at start */
    uint32_t header_timeout_ms;
    uint32_t ping_interval_ms;
    uint32_t pong_timeout_ms;
    uint32_t shutdown_timeout_ms;
    uint32_t close_timeout_ms;    /* grace for the close handshake / lingering close */
    hub_strlist_t allowed_origins;/* empty = any origin */
    /* limits.* */
    uint32_t max_connections;
    uint32_t max_message_bytes;
    uint64_t max_outbound_bytes;
    uint32_t max_request_line;
    uint32_t max_header_bytes;
    uint32_t max_body_bytes;
    /* log.* */
    int log_level;                /* HUB_LOG_* */
    int log_format;               /* HUB_LOG_JSON | HUB_LOG_TEXT */
    /* lua.* */
    char *lua_path;
    int lua_time_limit_ms;
    int lua_max_memory_mb;
    int lua_jit;
    int lua_watch;
    uint32_t lua_reload_debounce_ms;
    /* rooms.* */
    int rooms_auto_create;
    uint32_t rooms_default_max_clients;
    hub_strlist_t rooms_predefined;
    int rooms_presence_events;
    int rooms_members_only_send;
    int rooms_echo_to_sender;
    uint32_t rooms_max_per_client;
    uint32_t messages_per_second; /* per connection; 0 = unlimited */
    uint32_t messages_burst;
    uint32_t rate_limit_close_after; /* rejected messages in 10 s that close with 1008 */
    uint32_t connections_per_second_per_ip; /* 0 = unlimited */
    /* auth.* */
    int auth_enabled;
    char *auth_secret_key;        /* HS* only */
    char *auth_public_key_file;   /* RS* / ES* only */
    hub_strlist_t auth_algorithms;/* empty = HS256 with a secret, RS256 + ES256 with a key file */
    int auth_require_exp;
    char *auth_issuer;            /* "" = not checked */
    char *auth_audience;          /* "" = not checked */
    uint32_t auth_leeway_ms;
    uint32_t auth_max_token_bytes;
    int auth_allow_anonymous;
    hub_strlist_t anonymous_permissions;
    /* http.* */
    char *http_addr;              /* "" = the API is served on server.addr */
    char *http_api_key;
    hub_strlist_t http_cors_origins; /* empty = no CORS headers; "*" = any */
    /* metrics.* */
    int metrics_enabled;
    char *metrics_addr;           /* "" = /metrics is served on server.addr */
    /* cluster.* */
    int cluster_enabled;
    int cluster_bus_type;         /* HUB_BUS_TYPE_* */
    char *cluster_node_id;        /* "" = server.node_id, else generated */
    hub_strlist_t redis_addrs;    /* host:port or redis://[:password@]host:port */
    char *redis_key_prefix;
    char *redis_password;
    hub_strlist_t nats_urls;
    char *nats_stream_name;
    int nats_use_jetstream;
    uint32_t nats_message_retention_ms;
    uint32_t cluster_connect_timeout_ms;
    uint32_t cluster_reconnect_max_backoff_ms;
    uint64_t cluster_publish_buffer;
    uint32_t cluster_heartbeat_ms;
    uint32_t cluster_node_timeout_ms;
};

enum { HUB_BUS_TYPE_NOOP = 0, HUB_BUS_TYPE_REDIS, HUB_BUS_TYPE_NATS };

/* Builds a config: defaults, then the YAML file at path (NULL: none), then
 * GOHUB_* overrides from the environment. Returns NULL on any error and
 * writes one line "FILE:LINE: KEY: REASON" (or "env GOHUB_X: REASON") into
 * err. The caller owns the result and frees it with hub_config_free(). */
hub_config_t *hub_config_load(const char *path, char *err, size_t errlen);

/* Frees cfg and everything it owns; NULL is allowed. */
void hub_config_free(hub_config_t *cfg);

/* Writes the key reference (key, env variable, type, default, meaning) as a
 * markdown table, as shown in the README. */
void hub_config_dump_keys(FILE *out);

/* Loads path like hub_config_load() for a running daemon whose config is
 * old: keys that need a restart keep old's values, and their paths, space
 * separated, go into kept (when they differed). Returns the new snapshot
 * (the caller owns it) or NULL with err set; old is not touched. */
hub_config_t *hub_config_reload(const hub_config_t *old, const char *path, char *err,
                                size_t errlen, char *kept, size_t keptlen);

/* True when the key at dotted path can change on a running daemon (SIGHUP,
 * POST /api/reload); false for restart-only or unknown keys. */
int hub_config_key_reloadable(const char *path);

/* Splits "host:port" (server.addr syntax) into host (":port" and "*:port" give
 * "0.0.0.0") and port. Returns 0 or HUB_EINVAL. */
int hub_config_parse_addr(const char *addr, char *host, size_t hostlen, int *port);

#endif
