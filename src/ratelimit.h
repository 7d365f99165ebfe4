/* ratelimit.h: rate limits. A GCRA (generic cell rate algorithm) limiter
 * whose whole state is one timestamp, used per connection for inbound
 * messages, and a bounded node-wide table of per-IP limiters for WebSocket
 * upgrades. */
#ifndef HUB_RATELIMIT_H
#define HUB_RATELIMIT_H

#include <stdint.h>
#include <sys/socket.h>

/* One event at now_us against a limit of rate per second with bursts of up
 * to burst events. *tat_us is the limiter's state (0 = fresh). Returns 1
 * and records the event when allowed, else 0 and leaves *tat_us alone.
 * rate 0 means unlimited. Pure; any thread. */
int hub_rl_allow(uint64_t *tat_us, uint64_t now_us, uint32_t rate, uint32_t burst);

/* Any thread: one WebSocket upgrade from the address sa at now_us against
 * rate per second (bursts of up to rate). Returns 1 when allowed. The table
 * holds a fixed number of addresses; under pressure the one idle longest is
 * forgotten, so memory stays bounded whatever the peers do. */
int hub_rl_ip_allow(const struct sockaddr *sa, uint64_t now_us, uint32_t rate);

#endif
