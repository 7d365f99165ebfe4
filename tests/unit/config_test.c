/* config_test.c: unit tests for the configuration loader: defaults, shipped
 * YAML files, every value type, YAML structure, GOHUB_* overrides, messages
 * and hub_config_parse_addr. Single threaded; run from the repo root. It
 * includes src/config.c to reach the static bool parser (no key is a bool
 * yet); every global symbol of config.o is then defined here, so the linker
 * never pulls config.o from libgohub.a. */
#include "../../src/config.c"

#include "harness.h"

#include <stdlib.h>
#include <unistd.h>

/* Every variable the loader reads; unset before and after each test. */
static const char *const all_env[] = {
    "GOHUB_SERVER_ADDR", "GOHUB_SERVER_WORKERS", "GOHUB_SERVER_NODE_ID",
    "GOHUB_SERVER_HEADER_TIMEOUT", "GOHUB_SERVER_PING_INTERVAL",
    "GOHUB_SERVER_PONG_TIMEOUT", "GOHUB_SERVER_SHUTDOWN_TIMEOUT",
    "GOHUB_SERVER_CLOSE_TIMEOUT", "GOHUB_SERVER_ALLOWED_ORIGINS",
    "GOHUB_LIMITS_MAX_CONNECTIONS", "GOHUB_LIMITS_MAX_MESSAGE_BYTES",
    "GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "GOHUB_LIMITS_MAX_REQUEST_LINE",
    "GOHUB_LIMITS_MAX_HEADER_BYTES", "GOHUB_LIMITS_MAX_BODY_BYTES",
    "GOHUB_LOG_LEVEL", "GOHUB_LOG_FORMAT",
    "GOHUB_LUA_PATH", "GOHUB_LUA_TIME_LIMIT_MS", "GOHUB_LUA_MAX_MEMORY_MB", "GOHUB_LUA_JIT",
    "GOHUB_LUA_WATCH", "GOHUB_LUA_RELOAD_DEBOUNCE",
    "GOHUB_ROOMS_AUTO_CREATE", "GOHUB_ROOMS_DEFAULT_MAX_CLIENTS", "GOHUB_ROOMS_PREDEFINED",
    "GOHUB_ROOMS_PRESENCE_EVENTS", "GOHUB_ROOMS_MEMBERS_ONLY_SEND",
    "GOHUB_ROOMS_ECHO_TO_SENDER", "GOHUB_ROOMS_MAX_ROOMS_PER_CLIENT",
    "GOHUB_LIMITS_MESSAGES_PER_SECOND", "GOHUB_LIMITS_MESSAGES_BURST",
    "GOHUB_LIMITS_RATE_LIMIT_CLOSE_AFTER", "GOHUB_LIMITS_CONNECTIONS_PER_SECOND_PER_IP",
    "GOHUB_AUTH_ENABLED", "GOHUB_AUTH_SECRET_KEY", "GOHUB_AUTH_PUBLIC_KEY_FILE",
    "GOHUB_AUTH_ALGORITHMS", "GOHUB_AUTH_REQUIRE_EXP", "GOHUB_AUTH_ISSUER",
    "GOHUB_AUTH_AUDIENCE", "GOHUB_AUTH_LEEWAY", "GOHUB_AUTH_MAX_TOKEN_BYTES",
    "GOHUB_AUTH_ALLOW_ANONYMOUS", "GOHUB_AUTH_ANONYMOUS_PERMISSIONS",
    "GOHUB_HTTP_ADDR", "GOHUB_HTTP_API_KEY", "GOHUB_HTTP_CORS_ORIGINS",
    "GOHUB_METRICS_ENABLED", "GOHUB_METRICS_ADDR",
    "GOHUB_CLUSTER_ENABLED", "GOHUB_CLUSTER_BUS_TYPE", "GOHUB_CLUSTER_NODE_ID",
    "GOHUB_CLUSTER_REDIS_ADDRS", "GOHUB_CLUSTER_REDIS_KEY_PREFIX", "GOHUB_CLUSTER_REDIS_PASSWORD",
    "GOHUB_CLUSTER_NATS_URLS", "GOHUB_CLUSTER_NATS_STREAM_NAME",
    "GOHUB_CLUSTER_NATS_USE_JETSTREAM", "GOHUB_CLUSTER_NATS_MESSAGE_RETENTION",
    "GOHUB_CLUSTER_CONNECT_TIMEOUT", "GOHUB_CLUSTER_RECONNECT_MAX_BACKOFF",
    "GOHUB_CLUSTER_PUBLISH_BUFFER", "GOHUB_CLUSTER_HEARTBEAT_INTERVAL",
    "GOHUB_CLUSTER_NODE_TIMEOUT",
};

static void clear_env(void)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(all_env); i++)
        unsetenv(all_env[i]);
}

/* Writes text to a new file under /tmp; path receives its name. */
static void write_tmp(const char *text, char *path, size_t n)
{
    snprintf(path, n, "/tmp/gohub_config_test_XXXXXX");
    int fd = mkstemp(path);
    hub_assert(fd >= 0);
    size_t len = strlen(text);
    hub_assert(write(fd, text, len) == (ssize_t)len);
    close(fd);
}

/* Loads yaml from a temp file (removed again); path keeps the file name. */
static hub_config_t *load_yaml(const char *yaml, char *path, size_t pathlen, char *err,
                               size_t errlen)
{
    write_tmp(yaml, path, pathlen);
    hub_config_t *cfg = hub_config_load(path, err, errlen);
    unlink(path);
    return cfg;
}

/* Loads yaml and returns 1 if it fails with exactly "FILE:" + want. */
static int yaml_fails_with(const char *yaml, const char *want)
{
    char path[64], err[512], full[640];
    hub_config_t *cfg = load_yaml(yaml, path, sizeof(path), err, sizeof(err));
    if (cfg != NULL) {
        hub_config_free(cfg);
        printf("  loaded, expected error: %s\n", want);
        return 0;
    }
    snprintf(full, sizeof(full), "%s:%s", path, want);
    if (strcmp(err, full) != 0) {
        printf("  got  '%s'\n  want '%s'\n", err, full);
        return 0;
    }
    return 1;
}

/* Loads with path NULL and only env name=value set; returns the config (or
 * NULL with err set). The variable is unset again before returning. */
static hub_config_t *load_env(const char *name, const char *value, char *err, size_t errlen)
{
    setenv(name, value, 1);
    hub_config_t *cfg = hub_config_load(NULL, err, errlen);
    unsetenv(name);
    return cfg;
}

/* Returns 1 if name=value loads with no error. */
static int env_ok(const char *name, const char *value)
{
    char err[512];
    hub_config_t *cfg = load_env(name, value, err, sizeof(err));
    if (cfg == NULL) {
        printf("  %s=%s failed: %s\n", name, value, err);
        return 0;
    }
    hub_config_free(cfg);
    return 1;
}

/* Returns 1 if name=value fails with exactly "env NAME: " + want. */
static int env_fails_with(const char *name, const char *value, const char *want)
{
    char err[512], full[640];
    hub_config_t *cfg = load_env(name, value, err, sizeof(err));
    if (cfg != NULL) {
        hub_config_free(cfg);
        printf("  %s=%s loaded, expected: %s\n", name, value, want);
        return 0;
    }
    snprintf(full, sizeof(full), "env %s: %s", name, want);
    if (strcmp(err, full) != 0) {
        printf("  got  '%s'\n  want '%s'\n", err, full);
        return 0;
    }
    return 1;
}

/* Loads name=value and returns the uint32 at the given field (or ~0u). */
static uint64_t env_u64(const char *name, const char *value, size_t off, size_t size)
{
    char err[512];
    hub_config_t *cfg = load_env(name, value, err, sizeof(err));
    if (cfg == NULL) {
        printf("  %s=%s failed: %s\n", name, value, err);
        return UINT64_MAX;
    }
    uint64_t v;
    if (size == sizeof(uint64_t)) {
        memcpy(&v, (char *)cfg + off, sizeof(v));
    } else {
        uint32_t u;
        memcpy(&u, (char *)cfg + off, sizeof(u));
        v = u;
    }
    hub_config_free(cfg);
    return v;
}

#define ENV_FIELD(name, value, f) \
    env_u64(name, value, offsetof(hub_config_t, f), sizeof(((hub_config_t *)0)->f))

static void check_defaults(const hub_config_t *c, int *ok)
{
    *ok = strcmp(c->server_addr, ":8080") == 0 && c->server_workers == 0 &&
          strcmp(c->server_node_id, "") == 0 && c->header_timeout_ms == 10000 &&
          c->ping_interval_ms == 25000 && c->pong_timeout_ms == 10000 &&
          c->shutdown_timeout_ms == 10000 && c->close_timeout_ms == 3000 &&
          c->allowed_origins.n == 0 && c->allowed_origins.items == NULL &&
          c->max_connections == 0 && c->max_message_bytes == 65536 &&
          c->max_outbound_bytes == 1048576 && c->max_request_line == 8192 &&
          c->max_header_bytes == 16384 && c->max_body_bytes == 1048576 &&
          c->log_level == HUB_LOG_INFO && c->log_format == HUB_LOG_JSON;
}

/* ---- defaults and shipped files --------------------------------------- */

TEST(defaults_without_file)
{
    char err[256] = "junk";
    hub_config_t *c = hub_config_load(NULL, err, sizeof(err));
    ASSERT(c != NULL);
    ASSERT_STREQ(err, "");
    ASSERT_STREQ(c->server_addr, ":8080");
    ASSERT_EQ(c->server_workers, 0);
    ASSERT_STREQ(c->server_node_id, "");
    ASSERT_EQ(c->header_timeout_ms, 10000);
    ASSERT_EQ(c->ping_interval_ms, 25000);
    ASSERT_EQ(c->pong_timeout_ms, 10000);
    ASSERT_EQ(c->shutdown_timeout_ms, 10000);
    ASSERT_EQ(c->close_timeout_ms, 3000);
    ASSERT_EQ(c->allowed_origins.n, 0);
    ASSERT_EQ(c->max_connections, 0);
    ASSERT_EQ(c->max_message_bytes, 65536);
    ASSERT_EQ(c->max_outbound_bytes, 1048576);
    ASSERT_EQ(c->max_request_line, 8192);
    ASSERT_EQ(c->max_header_bytes, 16384);
    ASSERT_EQ(c->max_body_bytes, 1048576);
    ASSERT_EQ(c->log_level, HUB_LOG_INFO);
    ASSERT_EQ(c->log_format, HUB_LOG_JSON);
    hub_config_free(c);
}

TEST(shipped_default_file_equals_defaults)
{
    char err[256];
    int ok;
    hub_config_t *c = hub_config_load("configs/gohub.yaml", err, sizeof(err));
    if (c == NULL)
        FAILF("configs/gohub.yaml: %s", err);
    check_defaults(c, &ok);
    hub_config_free(c);
    ASSERT(ok);
}

TEST(shipped_example_full_loads)
{
    char err[256];
    hub_config_t *c = hub_config_load("configs/example-full.yaml", err, sizeof(err));
    if (c == NULL)
        FAILF("configs/example-full.yaml: %s", err);
    int ok = strcmp(c->server_addr, "127.0.0.1:9000") == 0 && c->server_workers == 4 &&
             strcmp(c->server_node_id, "hub-eu-1") == 0 && c->header_timeout_ms == 5000 &&
             c->ping_interval_ms == 20000 && c->pong_timeout_ms == 7500 &&
             c->shutdown_timeout_ms == 30000 && c->close_timeout_ms == 1500 &&
             c->allowed_origins.n == 2 &&
             strcmp(c->allowed_origins.items[1], "https://admin.example.com") == 0 &&
             c->max_connections == 50000 && c->max_message_bytes == 256 * 1024 &&
             c->max_outbound_bytes == 4 * 1024 * 1024 && c->max_request_line == 4096 &&
             c->max_header_bytes == 32768 && c->max_body_bytes == 512 * 1024 &&
             c->log_level == HUB_LOG_DEBUG && c->log_format == HUB_LOG_TEXT &&
             c->messages_per_second == 20 && c->connections_per_second_per_ip == 10 &&
             c->auth_enabled && !c->auth_allow_anonymous && c->auth_leeway_ms == 10000 &&
             strcmp(c->http_addr, "127.0.0.1:9001") == 0 &&
             strcmp(c->metrics_addr, "127.0.0.1:2112") == 0 &&
             c->cluster_enabled && c->cluster_bus_type == HUB_BUS_TYPE_NATS &&
             c->nats_urls.n == 2 && c->nats_use_jetstream &&
             c->nats_message_retention_ms == 300000 && c->cluster_node_timeout_ms == 5000;
    hub_config_free(c);
    ASSERT(ok);
}

TEST(free_null_is_noop)
{
    hub_config_free(NULL);
}

/* ---- value types ------------------------------------------------------ */

TEST(int_values)
{
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_WORKERS", "0", server_workers), 0);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_WORKERS", "256", server_workers), 256);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_WORKERS", "+8", server_workers), 8);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_WORKERS", "-0", server_workers), 0);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_CONNECTIONS", "10000000", max_connections),
              10000000);
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "x", "expected an integer, got 'x'"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "abc", "expected an integer, got 'abc'"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "1.5", "expected an integer, got '1.5'"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "", "expected an integer, got ''"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "12x", "expected an integer, got '12x'"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "-", "expected an integer, got '-'"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", " 4", "expected an integer, got ' 4'"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "257", "257 is out of range 0..256"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "-1", "-1 is out of range 0..256"));
    ASSERT(env_fails_with("GOHUB_SERVER_WORKERS", "99999999999999999999999",
                          "99999999999999999999999 is out of range 0..256"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_CONNECTIONS", "10000001",
                          "10000001 is out of range 0..10000000"));
    ASSERT(yaml_fails_with("server:\n  workers: 1000\n",
                           "2: server.workers: 1000 is out of range 0..256"));
    ASSERT(yaml_fails_with("server:\n  workers: abc\n",
                           "2: server.workers: expected an integer, got 'abc'"));
}

TEST(duration_values)
{
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "500ms", header_timeout_ms), 500);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "100ms", header_timeout_ms), 100);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "1.5s", header_timeout_ms), 1500);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "0.25s", header_timeout_ms), 250);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "2m", header_timeout_ms), 120000);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "0.5m", header_timeout_ms), 30000);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "1h", header_timeout_ms), 3600000);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "0.1s", header_timeout_ms), 100);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "150.4ms", header_timeout_ms), 150);
    /* a fraction of a millisecond rounds to nearest */
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "150.5ms", header_timeout_ms), 151);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "1.0006s", header_timeout_ms), 1001);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_HEADER_TIMEOUT", "0.1234567891234s", header_timeout_ms),
              123);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_SHUTDOWN_TIMEOUT", "0s", shutdown_timeout_ms), 0);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_SHUTDOWN_TIMEOUT", "10m", shutdown_timeout_ms), 600000);
    ASSERT_EQ(ENV_FIELD("GOHUB_SERVER_CLOSE_TIMEOUT", "1m", close_timeout_ms), 60000);
    ASSERT(env_fails_with("GOHUB_SERVER_HEADER_TIMEOUT", "99ms",
                          "99ms is out of range 100ms..1h"));
    ASSERT(env_fails_with("GOHUB_SERVER_HEADER_TIMEOUT", "0s", "0s is out of range 100ms..1h"));
    ASSERT(env_fails_with("GOHUB_SERVER_HEADER_TIMEOUT", "1.01h",
                          "1.01h is out of range 100ms..1h"));
    ASSERT(env_fails_with("GOHUB_SERVER_SHUTDOWN_TIMEOUT", "601s",
                          "601s is out of range 0s..10m"));
    ASSERT(env_fails_with("GOHUB_SERVER_CLOSE_TIMEOUT", "61s",
                          "61s is out of range 100ms..1m"));
    ASSERT(env_fails_with("GOHUB_SERVER_PING_INTERVAL", "99999999999999999999h",
                          "99999999999999999999h is out of range 100ms..1h"));
    static const char *const bad[] = { "10", "", "s", "10 s", "-1s", "1.s", ".5s", "10S",
                                       "1d", "1us", "1sec", "1e3ms", "1,5s", "10s " };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        char want[128];
        snprintf(want, sizeof(want), "expected a duration like 10s or 500ms, got '%s'", bad[i]);
        ASSERT(env_fails_with("GOHUB_SERVER_PING_INTERVAL", bad[i], want));
    }
    ASSERT(yaml_fails_with(
        "server:\n  header_timeout: 10\n",
        "2: server.header_timeout: expected a duration like 10s or 500ms, got '10'"));
}

TEST(size_values)
{
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "16", max_message_bytes), 16);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "1000", max_message_bytes), 1000);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "1K", max_message_bytes), 1024);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "2KB", max_message_bytes), 2048);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "3KiB", max_message_bytes), 3072);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "64kib", max_message_bytes), 65536);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "1k", max_message_bytes), 1024);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "1M", max_message_bytes), 1048576);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "2mb", max_message_bytes), 2097152);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "64MiB", max_message_bytes),
              67108864);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "1G", max_outbound_bytes),
              1073741824);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "1gb", max_outbound_bytes),
              1073741824);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "1GiB", max_outbound_bytes),
              1073741824);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "4096", max_outbound_bytes), 4096);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_BODY_BYTES", "0", max_body_bytes), 0);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_REQUEST_LINE", "256", max_request_line), 256);
    ASSERT_EQ(ENV_FIELD("GOHUB_LIMITS_MAX_HEADER_BYTES", "1MiB", max_header_bytes), 1048576);
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "15", "15 is out of range 16..64MiB"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_MESSAGE_BYTES", "67108865",
                          "67108865 is out of range 16..64MiB"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "4095",
                          "4095 is out of range 4KiB..1GiB"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "2G", "2G is out of range 4KiB..1GiB"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_OUTBOUND_BYTES", "99999999999999999999G",
                          "99999999999999999999G is out of range 4KiB..1GiB"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_HEADER_BYTES", "1023",
                          "1023 is out of range 1KiB..1MiB"));
    ASSERT(env_fails_with("GOHUB_LIMITS_MAX_BODY_BYTES", "65MiB", "65MiB is out of range 0..64MiB"));
    static const char *const bad[] = { "", "-1", "+5", "1.5MiB", "64KiBx", "64 KiB", "KiB",
                                       "1B", "1T", "1kibi", "0x10" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        char want[128];
        snprintf(want, sizeof(want), "expected a size like 64KiB, got '%s'", bad[i]);
        ASSERT(env_fails_with("GOHUB_LIMITS_MAX_MESSAGE_BYTES", bad[i], want));
    }
    ASSERT(yaml_fails_with("limits:\n  max_message_bytes: 128MiB\n",
                           "2: limits.max_message_bytes: 128MiB is out of range 16..64MiB"));
}

TEST(bool_values)
{
    /* no key is a bool yet: drive the table path with a test descriptor
     * whose field is an int (bools may live in bool or int fields) */
    static const key_desc_t flag = { "test.flag", KT_BOOL, FIELD(server_workers), "false",
                                     0, 0, NULL, NULL, "test", 0, NULL };
    static const char *const yes[] = { "true", "TRUE", "True", "yes", "YES", "on", "On", "1" };
    static const char *const no[] = { "false", "FALSE", "no", "No", "off", "OFF", "0" };
    static const char *const bad[] = { "", "2", "y", "n", "enabled", "truee", " true" };
    char reason[REASON_MAX], want[128];
    hub_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));

    for (size_t i = 0; i < HUB_ARRAY_LEN(yes); i++) {
        cfg.server_workers = 7;
        ASSERT_EQ(set_scalar(&cfg, &flag, yes[i], reason, sizeof(reason)), 0);
        ASSERT_EQ(cfg.server_workers, 1);
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(no); i++) {
        cfg.server_workers = 7;
        ASSERT_EQ(set_scalar(&cfg, &flag, no[i], reason, sizeof(reason)), 0);
        ASSERT_EQ(cfg.server_workers, 0);
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        ASSERT_EQ(set_scalar(&cfg, &flag, bad[i], reason, sizeof(reason)), -1);
        snprintf(want, sizeof(want), "expected true or false, got '%s'", bad[i]);
        ASSERT_STREQ(reason, want);
    }
    bool b = false;
    ASSERT_EQ(parse_bool("yes", &b), 0);
    ASSERT(b);
    ASSERT_EQ(parse_bool("maybe", &b), -1);
}

TEST(enum_values)
{
    ASSERT_EQ(ENV_FIELD("GOHUB_LOG_LEVEL", "debug", log_level), HUB_LOG_DEBUG);
    ASSERT_EQ(ENV_FIELD("GOHUB_LOG_LEVEL", "info", log_level), HUB_LOG_INFO);
    ASSERT_EQ(ENV_FIELD("GOHUB_LOG_LEVEL", "warn", log_level), HUB_LOG_WARN);
    ASSERT_EQ(ENV_FIELD("GOHUB_LOG_LEVEL", "error", log_level), HUB_LOG_ERROR);
    ASSERT_EQ(ENV_FIELD("GOHUB_LOG_FORMAT", "text", log_format), HUB_LOG_TEXT);
    ASSERT_EQ(ENV_FIELD("GOHUB_LOG_FORMAT", "json", log_format), HUB_LOG_JSON);
    ASSERT(env_fails_with("GOHUB_LOG_LEVEL", "INFO",
                          "expected one of debug, info, warn, error, got 'INFO'"));
    ASSERT(env_fails_with("GOHUB_LOG_LEVEL", "warning",
                          "expected one of debug, info, warn, error, got 'warning'"));
    ASSERT(env_fails_with("GOHUB_LOG_FORMAT", "xml", "expected one of json, text, got 'xml'"));
    ASSERT(yaml_fails_with("log:\n  format: yaml\n",
                           "2: log.format: expected one of json, text, got 'yaml'"));
}

TEST(string_values_and_node_id)
{
    char err[256], path[64];
    char id64[65], id65[66];
    memset(id64, 'a', 64);
    id64[64] = '\0';
    memset(id65, 'b', 65);
    id65[65] = '\0';

    hub_config_t *c = load_env("GOHUB_SERVER_NODE_ID", "node-1.eu_west", err, sizeof(err));
    ASSERT(c != NULL);
    int ok = strcmp(c->server_node_id, "node-1.eu_west") == 0;
    hub_config_free(c);
    ASSERT(ok);
    ASSERT(env_ok("GOHUB_SERVER_NODE_ID", id64));
    ASSERT(env_ok("GOHUB_SERVER_NODE_ID", ""));
    char want[256];
    snprintf(want, sizeof(want),
             "expected at most 64 characters of A-Z a-z 0-9 . _ -, got '%s'", id65);
    ASSERT(env_fails_with("GOHUB_SERVER_NODE_ID", id65, want));
    ASSERT(env_fails_with("GOHUB_SERVER_NODE_ID", "a b",
                          "expected at most 64 characters of A-Z a-z 0-9 . _ -, got 'a b'"));
    ASSERT(env_fails_with("GOHUB_SERVER_NODE_ID", "n/1",
                          "expected at most 64 characters of A-Z a-z 0-9 . _ -, got 'n/1'"));
    ASSERT(env_fails_with("GOHUB_SERVER_NODE_ID", "n\xc3\xa9",
                          "expected at most 64 characters of A-Z a-z 0-9 . _ -, got 'n\xc3\xa9'"));

    /* YAML: quoted and plain scalars are strings, "yes" and 123 included */
    c = load_yaml("server:\n  node_id: 123\n", path, sizeof(path), err, sizeof(err));
    ASSERT(c != NULL);
    ok = strcmp(c->server_node_id, "123") == 0;
    hub_config_free(c);
    ASSERT(ok);
    c = load_yaml("server:\n  node_id: 'yes'\n", path, sizeof(path), err, sizeof(err));
    ASSERT(c != NULL);
    ok = strcmp(c->server_node_id, "yes") == 0;
    hub_config_free(c);
    ASSERT(ok);
    ASSERT(yaml_fails_with("server:\n  node_id: \"bad id\"\n",
                           "2: server.node_id: expected at most 64 characters of A-Z a-z 0-9 . "
                           "_ -, got 'bad id'"));
}

TEST(server_addr_validation)
{
    char err[256];
    static const char *const good[] = { ":8080", "*:8080", "127.0.0.1:0", "0.0.0.0:65535",
                                        "[::1]:8080", "[::]:80", "localhost:8080" };
    static const char *const bad[] = { "", "8080", "127.0.0.1", "127.0.0.1:", ":http",
                                       ":65536", ":-1", "::1:8080", "[::1]8080", "[]:80",
                                       "[::1:80", "a b:80", ":123456" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(good); i++) {
        hub_config_t *c = load_env("GOHUB_SERVER_ADDR", good[i], err, sizeof(err));
        if (c == NULL)
            FAILF("%s: %s", good[i], err);
        int ok = strcmp(c->server_addr, good[i]) == 0;
        hub_config_free(c);
        ASSERT(ok);
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        char want[160];
        snprintf(want, sizeof(want),
                 "expected host:port like :8080, 127.0.0.1:8080 or [::1]:8080, got '%s'", bad[i]);
        ASSERT(env_fails_with("GOHUB_SERVER_ADDR", bad[i], want));
    }
    ASSERT(yaml_fails_with("server:\n  addr: 8080\n",
                           "2: server.addr: expected host:port like :8080, 127.0.0.1:8080 or "
                           "[::1]:8080, got '8080'"));
}

TEST(parse_addr_cases)
{
    char host[64];
    int port = -1;
    ASSERT_EQ(hub_config_parse_addr(":8080", host, sizeof(host), &port), 0);
    ASSERT_STREQ(host, "0.0.0.0");
    ASSERT_EQ(port, 8080);
    ASSERT_EQ(hub_config_parse_addr("*:8081", host, sizeof(host), &port), 0);
    ASSERT_STREQ(host, "0.0.0.0");
    ASSERT_EQ(port, 8081);
    ASSERT_EQ(hub_config_parse_addr("127.0.0.1:0", host, sizeof(host), &port), 0);
    ASSERT_STREQ(host, "127.0.0.1");
    ASSERT_EQ(port, 0);
    ASSERT_EQ(hub_config_parse_addr("[::1]:8080", host, sizeof(host), &port), 0);
    ASSERT_STREQ(host, "::1");
    ASSERT_EQ(port, 8080);
    ASSERT_EQ(hub_config_parse_addr("[fe80::1%eth0]:443", host, sizeof(host), &port), 0);
    ASSERT_STREQ(host, "fe80::1%eth0");
    ASSERT_EQ(port, 443);
    ASSERT_EQ(hub_config_parse_addr("10.0.0.2:65535", host, sizeof(host), &port), 0);
    ASSERT_STREQ(host, "10.0.0.2");
    ASSERT_EQ(port, 65535);

    ASSERT_EQ(hub_config_parse_addr("", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("127.0.0.1", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("127.0.0.1:", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":abc", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":80x", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":+80", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":65536", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":99999", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":0080800", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("::1:8080", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("[::1]", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("[::1]:", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("[1.2.3.4]:80", host, sizeof(host), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(NULL, host, sizeof(host), &port), HUB_EINVAL);
    /* the host must fit, with its NUL */
    char nine[9], ten[10];
    ASSERT_EQ(hub_config_parse_addr("127.0.0.1:80", nine, sizeof(nine), &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr("127.0.0.1:80", ten, sizeof(ten), &port), 0);
    ASSERT_STREQ(ten, "127.0.0.1");
    ASSERT_EQ(hub_config_parse_addr(":80", nine, 7, &port), HUB_EINVAL);
    ASSERT_EQ(hub_config_parse_addr(":80", nine, 8, &port), 0);
    ASSERT_STREQ(nine, "0.0.0.0");
}

/* ---- YAML structure --------------------------------------------------- */

TEST(nested_yaml_sets_fields)
{
    char path[64], err[256];
    hub_config_t *c = load_yaml("# comment\n"
                                "server:\n"
                                "  addr: \"[::1]:9001\"\n"
                                "  workers: 3\n"
                                "  ping_interval: 1m\n"
                                "limits:\n"
                                "  max_body_bytes: 0\n"
                                "  max_outbound_bytes: 8MB\n"
                                "log: {level: warn, format: text}\n",
                                path, sizeof(path), err, sizeof(err));
    if (c == NULL)
        FAILF("%s", err);
    int ok = strcmp(c->server_addr, "[::1]:9001") == 0 && c->server_workers == 3 &&
             c->ping_interval_ms == 60000 && c->max_body_bytes == 0 &&
             c->max_outbound_bytes == 8u * 1024 * 1024 && c->log_level == HUB_LOG_WARN &&
             c->log_format == HUB_LOG_TEXT &&
             /* untouched keys keep their defaults */
             c->pong_timeout_ms == 10000 && c->max_message_bytes == 65536;
    hub_config_free(c);
    ASSERT(ok);
}

TEST(lists_flow_block_scalar)
{
    char path[64], err[256];
    hub_config_t *c;
    int ok;

    c = load_yaml("server:\n  allowed_origins: [https://a.example, 'https://b.example']\n",
                  path, sizeof(path), err, sizeof(err));
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 2 &&
         strcmp(c->allowed_origins.items[0], "https://a.example") == 0 &&
         strcmp(c->allowed_origins.items[1], "https://b.example") == 0;
    hub_config_free(c);
    ASSERT(ok);

    c = load_yaml("server:\n  allowed_origins:\n    - https://a.example\n"
                  "    - https://b.example\n    - http://localhost:3000\n",
                  path, sizeof(path), err, sizeof(err));
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 3 &&
         strcmp(c->allowed_origins.items[2], "http://localhost:3000") == 0;
    hub_config_free(c);
    ASSERT(ok);

    c = load_yaml("server:\n  allowed_origins: https://only.example\n", path, sizeof(path),
                  err, sizeof(err));
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 1 &&
         strcmp(c->allowed_origins.items[0], "https://only.example") == 0;
    hub_config_free(c);
    ASSERT(ok);

    c = load_yaml("server:\n  allowed_origins: []\n", path, sizeof(path), err, sizeof(err));
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 0;
    hub_config_free(c);
    ASSERT(ok);

    c = load_yaml("server:\n  allowed_origins:\n", path, sizeof(path), err, sizeof(err));
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 0;
    hub_config_free(c);
    ASSERT(ok);

    ASSERT(yaml_fails_with("server:\n  allowed_origins:\n    - https://a\n    - ''\n",
                           "4: server.allowed_origins: expected a non-empty string, got ''"));
    ASSERT(yaml_fails_with("server:\n  allowed_origins:\n    - https://a\n    - [x]\n",
                           "4: server.allowed_origins: expected a list of strings, got a "
                           "sequence"));
    ASSERT(yaml_fails_with("server:\n  allowed_origins: {a: 1}\n",
                           "2: server.allowed_origins: expected a list, got a mapping"));
}

TEST(unknown_keys_with_line)
{
    ASSERT(yaml_fails_with("server:\n  workers: 2\n  adr: \":80\"\n",
                           "3: unknown key 'server.adr'"));
    ASSERT(yaml_fails_with("# top\nserver:\n  workers: 2\n\nbogus: 1\n",
                           "5: unknown key 'bogus'"));
    ASSERT(yaml_fails_with("log:\n  level: info\n  colour: true\n",
                           "3: unknown key 'log.colour'"));
    ASSERT(yaml_fails_with("server.addr: \":80\"\n",
                           "1: unknown key 'server.addr' (write nested mappings, not dotted "
                           "keys)"));
    ASSERT(yaml_fails_with("? [a, b]\n: 1\n", "1: expected a key name, got a sequence"));
    ASSERT(yaml_fails_with("server:\n  workers:\n    a: 1\n",
                           "2: server.workers: expected an integer, got a mapping"));
}

TEST(wrong_shapes_with_line)
{
    ASSERT(yaml_fails_with("server:\n  addr:\n    host: x\n",
                           "2: server.addr: expected a string, got a mapping"));
    ASSERT(yaml_fails_with("server:\n  workers: [1, 2]\n",
                           "2: server.workers: expected an integer, got a sequence"));
    ASSERT(yaml_fails_with("log:\n  level:\n    - info\n",
                           "2: log.level: expected one of debug, info, warn, error, got a "
                           "sequence"));
    ASSERT(yaml_fails_with("server: 5\n",
                           "1: server: expected a mapping of server.* keys, got a scalar"));
    ASSERT(yaml_fails_with("\nlimits:\n  - 1\n",
                           "2: limits: expected a mapping of limits.* keys, got a sequence"));
}

TEST(empty_section_is_allowed)
{
    char path[64], err[256];
    int ok;
    hub_config_t *c = load_yaml("server:\nlog: ~\n", path, sizeof(path), err, sizeof(err));
    if (c == NULL)
        FAILF("%s", err);
    check_defaults(c, &ok);
    hub_config_free(c);
    ASSERT(ok);
}

TEST(duplicate_keys)
{
    ASSERT(yaml_fails_with("server:\n  workers: 1\n  workers: 2\n",
                           "3: duplicate key 'server.workers'"));
    ASSERT(yaml_fails_with("server:\n  workers: 1\nlog:\n  level: info\nserver:\n  addr: ':1'\n",
                           "5: duplicate key 'server'"));
}

TEST(yaml_syntax_errors)
{
    char path[64], err[256], prefix[96];
    hub_config_t *c;

    c = load_yaml("server:\n  addr: \":80\"\n  workers: [1, 2\n", path, sizeof(path), err,
                  sizeof(err));
    ASSERT(c == NULL);
    snprintf(prefix, sizeof(prefix), "%s:4: YAML syntax error: ", path);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        FAILF("got '%s'", err);
    ASSERT(strlen(err) > strlen(prefix));
    ASSERT(strchr(err, '\n') == NULL);

    c = load_yaml("server:\n  workers: 1\n   addr: x: y\n", path, sizeof(path), err,
                  sizeof(err));
    ASSERT(c == NULL);
    snprintf(prefix, sizeof(prefix), "%s:3: YAML syntax error: ", path);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        FAILF("got '%s'", err);

    /* invalid UTF-8 is a reader error, which has only a byte offset */
    c = load_yaml("server:\n  node_id: a\n  addr: \"\xff\"\n", path, sizeof(path), err,
                  sizeof(err));
    ASSERT(c == NULL);
    snprintf(prefix, sizeof(prefix), "%s:3: YAML syntax error: ", path);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        FAILF("got '%s'", err);

    ASSERT(yaml_fails_with("server:\n  workers: 1\n---\nlog:\n  level: debug\n",
                           "4: expected a single YAML document"));
}

TEST(empty_and_comment_only_files)
{
    static const char *const texts[] = { "", "# nothing here\n\n   # at all\n", "---\n",
                                         "~\n" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(texts); i++) {
        char path[64], err[256];
        int ok;
        hub_config_t *c = load_yaml(texts[i], path, sizeof(path), err, sizeof(err));
        if (c == NULL)
            FAILF("text %zu: %s", i, err);
        check_defaults(c, &ok);
        hub_config_free(c);
        ASSERT(ok);
    }
}

TEST(nonexistent_file)
{
    char err[256];
    hub_config_t *c = hub_config_load("/tmp/gohub-no-such-dir/none.yaml", err, sizeof(err));
    ASSERT(c == NULL);
    ASSERT_STREQ(err, "/tmp/gohub-no-such-dir/none.yaml: cannot open: No such file or directory");
}

TEST(top_level_not_a_mapping)
{
    ASSERT(yaml_fails_with("- a\n- b\n", "1: the top level must be a mapping, got a sequence"));
    ASSERT(yaml_fails_with("\nhello\n", "2: the top level must be a mapping, got a scalar"));
}

TEST(error_is_one_line)
{
    ASSERT(yaml_fails_with("server:\n  workers: \"1\\n2\"\n",
                           "2: server.workers: expected an integer, got '1 2'"));
    char err[8];
    hub_config_t *c = load_env("GOHUB_SERVER_WORKERS", "abcdefgh", err, sizeof(err));
    ASSERT(c == NULL);
    ASSERT_STREQ(err, "env GOH"); /* truncated, still terminated */
    c = load_env("GOHUB_SERVER_WORKERS", "abc", NULL, 0);
    ASSERT(c == NULL);
}

/* ---- environment ------------------------------------------------------ */

TEST(env_overrides_key_missing_from_file)
{
    char path[64], err[256];
    setenv("GOHUB_LIMITS_MAX_CONNECTIONS", "123", 1);
    setenv("GOHUB_LOG_FORMAT", "text", 1);
    hub_config_t *c = load_yaml("server:\n  workers: 2\n", path, sizeof(path), err,
                                sizeof(err));
    clear_env();
    if (c == NULL)
        FAILF("%s", err);
    int ok = c->server_workers == 2 && c->max_connections == 123 &&
             c->log_format == HUB_LOG_TEXT;
    hub_config_free(c);
    ASSERT(ok);
}

TEST(env_beats_file)
{
    char path[64], err[256];
    setenv("GOHUB_SERVER_ADDR", "127.0.0.1:7000", 1);
    setenv("GOHUB_SERVER_HEADER_TIMEOUT", "750ms", 1);
    setenv("GOHUB_SERVER_ALLOWED_ORIGINS", "https://env.example", 1);
    hub_config_t *c = load_yaml("server:\n  addr: ':9000'\n  header_timeout: 3s\n"
                                "  allowed_origins: [https://file.example, https://x]\n",
                                path, sizeof(path), err, sizeof(err));
    clear_env();
    if (c == NULL)
        FAILF("%s", err);
    int ok = strcmp(c->server_addr, "127.0.0.1:7000") == 0 && c->header_timeout_ms == 750 &&
             c->allowed_origins.n == 1 &&
             strcmp(c->allowed_origins.items[0], "https://env.example") == 0;
    hub_config_free(c);
    ASSERT(ok);

    /* a bad env value fails even when the file is fine */
    setenv("GOHUB_SERVER_WORKERS", "x", 1);
    c = load_yaml("server:\n  workers: 2\n", path, sizeof(path), err, sizeof(err));
    clear_env();
    ASSERT(c == NULL);
    ASSERT_STREQ(err, "env GOHUB_SERVER_WORKERS: expected an integer, got 'x'");
}

TEST(env_list_split_and_trim)
{
    char err[256];
    hub_config_t *c = load_env("GOHUB_SERVER_ALLOWED_ORIGINS",
                               "  https://a.example ,https://b.example,\thttp://c:1  ", err,
                               sizeof(err));
    ASSERT(c != NULL);
    int ok = c->allowed_origins.n == 3 &&
             strcmp(c->allowed_origins.items[0], "https://a.example") == 0 &&
             strcmp(c->allowed_origins.items[1], "https://b.example") == 0 &&
             strcmp(c->allowed_origins.items[2], "http://c:1") == 0;
    hub_config_free(c);
    ASSERT(ok);

    /* an empty value empties a list the file set */
    char path[64];
    setenv("GOHUB_SERVER_ALLOWED_ORIGINS", "", 1);
    c = load_yaml("server:\n  allowed_origins: [https://a]\n", path, sizeof(path), err,
                  sizeof(err));
    clear_env();
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 0 && c->allowed_origins.items == NULL;
    hub_config_free(c);
    ASSERT(ok);

    c = load_env("GOHUB_SERVER_ALLOWED_ORIGINS", "   ", err, sizeof(err));
    ASSERT(c != NULL);
    ok = c->allowed_origins.n == 0;
    hub_config_free(c);
    ASSERT(ok);

    ASSERT(env_fails_with("GOHUB_SERVER_ALLOWED_ORIGINS", "https://a,,https://b",
                          "item 2: expected a non-empty string, got ''"));
    ASSERT(env_fails_with("GOHUB_SERVER_ALLOWED_ORIGINS", "https://a, ",
                          "item 2: expected a non-empty string, got ''"));
}

TEST(env_names_follow_paths)
{
    char name[PATH_MAX_CHARS + 8];
    /* every table key has its variable in all_env, so clear_env() is complete */
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        env_name(&keys[i], name, sizeof(name));
        int found = 0;
        for (size_t j = 0; j < HUB_ARRAY_LEN(all_env); j++)
            found |= strcmp(all_env[j], name) == 0;
        if (!found)
            FAILF("%s not in all_env", name);
    }
    ASSERT_EQ(HUB_ARRAY_LEN(keys), HUB_ARRAY_LEN(all_env));
}

/* ---- key reference ---------------------------------------------------- */

TEST(dump_keys_table)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ASSERT(f != NULL);
    hub_config_dump_keys(f);
    fclose(f);

    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    const char *head = "| key | env | type | default | reload | meaning |\n";
    int ok = strncmp(buf, head, strlen(head)) == 0 && lines == 2 + HUB_ARRAY_LEN(keys) &&
             strstr(buf, "| `server.addr` | `GOHUB_SERVER_ADDR`, `WEBSOCKET_PORT` | string | "
                         "`:8080` | restart |") &&
             strstr(buf, "| `limits.messages_per_second` | `GOHUB_LIMITS_MESSAGES_PER_SECOND` | "
                         "int 0..10000000 | `100` | live |") &&
             strstr(buf, "| `server.workers` | `GOHUB_SERVER_WORKERS` | int 0..256 | `0` |") &&
             strstr(buf, "| `server.header_timeout` | `GOHUB_SERVER_HEADER_TIMEOUT` | "
                         "duration 100ms..1h | `10s` |") &&
             strstr(buf, "| `limits.max_message_bytes` | `GOHUB_LIMITS_MAX_MESSAGE_BYTES` | "
                         "size 16..64MiB | `64KiB` |") &&
             strstr(buf, "| `server.allowed_origins` | `GOHUB_SERVER_ALLOWED_ORIGINS` | "
                         "list of strings | `[]` |") &&
             strstr(buf, "| `server.node_id` | `GOHUB_SERVER_NODE_ID` | string | `\"\"` |") &&
             strstr(buf, "| `log.level` | `GOHUB_LOG_LEVEL` | enum: debug, info, warn, error | "
                         "`info` |");
    /* rows come in table order */
    char *a = strstr(buf, "`server.addr`"), *l = strstr(buf, "`log.format`");
    ok = ok && a && l && a < l;
    if (!ok)
        printf("%s", buf);
    free(buf);
    ASSERT(ok);
}

TEST(reference_system_env_aliases)
{
    char err[512];
    hub_config_t *cfg = load_env("CENTRIFUGO_TOKEN_HMAC_SECRET_KEY", "s3cret", err, sizeof(err));
    ASSERT(cfg != NULL);
    ASSERT(strcmp(cfg->auth_secret_key, "s3cret") == 0);
    hub_config_free(cfg);
    cfg = load_env("WEBSOCKET_PORT", "9123", err, sizeof(err));
    ASSERT(cfg != NULL);
    ASSERT(strcmp(cfg->server_addr, ":9123") == 0); /* a bare port means :PORT */
    hub_config_free(cfg);
    cfg = load_env("METRICS_PORT", "2112", err, sizeof(err));
    ASSERT(cfg != NULL);
    ASSERT(strcmp(cfg->metrics_addr, ":2112") == 0);
    hub_config_free(cfg);
    /* GOHUB_* wins over the alias */
    setenv("HTTP_PORT", "81", 1);
    cfg = load_env("GOHUB_HTTP_ADDR", "127.0.0.1:82", err, sizeof(err));
    unsetenv("HTTP_PORT");
    ASSERT(cfg != NULL);
    ASSERT(strcmp(cfg->http_addr, "127.0.0.1:82") == 0);
    hub_config_free(cfg);
    ASSERT(env_fails_with("WEBSOCKET_PORT", "http", "expected host:port like :8080, "
                          "127.0.0.1:8080 or [::1]:8080, got 'http'"));
}

/* Loads yaml: 1 when it fails with an error containing want (want NULL:
 * when it loads). */
static int yaml_result(const char *yaml, const char *want)
{
    char path[64], err[512];
    hub_config_t *cfg = load_yaml(yaml, path, sizeof(path), err, sizeof(err));
    if (cfg != NULL) {
        hub_config_free(cfg);
        return want == NULL;
    }
    if (want == NULL || strstr(err, want) == NULL) {
        printf("  got '%s', want '%s'\n", err, want ? want : "(loaded)");
        return 0;
    }
    return 1;
}

TEST(auth_needs_a_key_for_its_algorithms)
{
    ASSERT(yaml_fails_with("auth:\n  enabled: true\n",
                           " auth.enabled: needs auth.secret_key or auth.public_key_file"));
    ASSERT(yaml_fails_with("auth:\n  enabled: true\n  secret_key: k\n  algorithms: [RS256]\n",
                           " auth.algorithms: RS256 needs auth.public_key_file"));
    ASSERT(yaml_result("auth:\n  algorithms: [HS256, none]\n", "got 'none'"));
    ASSERT(yaml_result("auth:\n  enabled: true\n  secret_key: k\n  algorithms: [HS256, HS512]\n",
                       NULL));
}

TEST(reload_keeps_restart_only_values)
{
    char path[64], err[512], kept[256];
    hub_config_t *old = load_yaml("server:\n  close_timeout: 3s\nlog:\n  level: info\n", path,
                                  sizeof(path), err, sizeof(err));
    ASSERT(old != NULL);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs("server:\n  close_timeout: 1s\n  allowed_origins: [https://a.example]\n"
          "log:\n  level: debug\n  format: text\n", f);
    fclose(f);
    hub_config_t *cfg = hub_config_reload(old, path, err, sizeof(err), kept, sizeof(kept));
    ASSERT(cfg != NULL);
    ASSERT_EQ(cfg->close_timeout_ms, 3000);              /* restart: kept */
    ASSERT_EQ(cfg->log_format, HUB_LOG_JSON);            /* restart: kept */
    ASSERT_EQ(cfg->log_level, HUB_LOG_DEBUG);            /* live: applied */
    ASSERT_EQ(cfg->allowed_origins.n, 1);                /* live: applied */
    ASSERT(strcmp(kept, "server.close_timeout log.format") == 0);
    hub_config_free(cfg);
    /* a bad file: NULL, old untouched */
    f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs("server:\n  close_timeout: soon\n", f);
    fclose(f);
    ASSERT(hub_config_reload(old, path, err, sizeof(err), kept, sizeof(kept)) == NULL);
    ASSERT(strstr(err, "server.close_timeout") != NULL);
    ASSERT_EQ(old->close_timeout_ms, 3000);
    unlink(path);
    hub_config_free(old);
    ASSERT(hub_config_key_reloadable("limits.messages_per_second"));
    ASSERT(!hub_config_key_reloadable("server.addr"));
    ASSERT(!hub_config_key_reloadable("no.such.key"));
}

int main(void)
{
    clear_env();
    RUN(defaults_without_file);
    RUN(shipped_default_file_equals_defaults);
    RUN(shipped_example_full_loads);
    RUN(free_null_is_noop);
    RUN(int_values);
    RUN(duration_values);
    RUN(size_values);
    RUN(bool_values);
    RUN(enum_values);
    RUN(string_values_and_node_id);
    RUN(server_addr_validation);
    RUN(parse_addr_cases);
    RUN(nested_yaml_sets_fields);
    RUN(lists_flow_block_scalar);
    RUN(unknown_keys_with_line);
    RUN(wrong_shapes_with_line);
    RUN(empty_section_is_allowed);
    RUN(duplicate_keys);
    RUN(yaml_syntax_errors);
    RUN(empty_and_comment_only_files);
    RUN(nonexistent_file);
    RUN(top_level_not_a_mapping);
    RUN(error_is_one_line);
    RUN(env_overrides_key_missing_from_file);
    RUN(env_beats_file);
    RUN(env_list_split_and_trim);
    RUN(env_names_follow_paths);
    RUN(dump_keys_table);
    RUN(reference_system_env_aliases);
    RUN(auth_needs_a_key_for_its_algorithms);
    RUN(reload_keeps_restart_only_values);
    clear_env();
    HARNESS_MAIN_END();
}
