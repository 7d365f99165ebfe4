/* log.h: structured logging, one line per event on stderr, JSON or text.
 * Any thread may log: a line is built on the stack and written with one
 * write(2). hub_log_setup() runs once before threads start. */
#ifndef HUB_LOG_H
#define HUB_LOG_H

#include <stdint.h>

enum { HUB_LOG_DEBUG = 0, HUB_LOG_INFO, HUB_LOG_WARN, HUB_LOG_ERROR };
enum { HUB_LOG_JSON = 0, HUB_LOG_TEXT };

/* Sets the minimum level and the format (HUB_LOG_JSON or HUB_LOG_TEXT). */
void hub_log_setup(int level, int format);
int hub_log_enabled(int level);

/* Logs msg with fields. kvfmt is "key=value key2=value ..." where a value
 * runs to the next space and mixes literal bytes with printf conversions
 * among %s %.*s %d %i %u %x %ld %lu %lld %llu %zu %zd %f %g %.Nf %.Ng, e.g.
 * "addr=%s:%d". A value that is one number conversion becomes a JSON number
 * (%x and a non-finite double excepted); any other is a string (at most
 * 512 bytes when it has more than one piece). A token that is not key=value
 * is logged under the key "?". kvfmt may be "" for no fields. Tokens and
 * message bodies never go here above debug level. */
void hub_log(int level, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A line that a flood of events would repeat: logged at most every 10 s,
 * with the number of events since the last line. One thread's. */
typedef struct {
    uint64_t last_ms;  /* the caller's clock at the last line; 0 = none yet */
    uint64_t events;   /* since that line */
} hub_ratelog_t;

/* Counts one event of r at now_ms (any monotonic clock in ms); returns the
 * number to log now (the events since the last line, this one included),
 * or 0 when a line went out less than 10 s ago. */
uint64_t hub_ratelog_hit(hub_ratelog_t *r, uint64_t now_ms);

#define hub_log_debug(msg, ...) \
    do { if (hub_log_enabled(HUB_LOG_DEBUG)) hub_log(HUB_LOG_DEBUG, msg, __VA_ARGS__); } while (0)
#define hub_log_info(msg, ...)  hub_log(HUB_LOG_INFO, msg, __VA_ARGS__)
#define hub_log_warn(msg, ...)  hub_log(HUB_LOG_WARN, msg, __VA_ARGS__)
#define hub_log_error(msg, ...) hub_log(HUB_LOG_ERROR, msg, __VA_ARGS__)

/* Parses "debug" | "info" | "warn" | "error"; returns -1 if unknown. */
int hub_log_level_parse(const char *s);

#endif
