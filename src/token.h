/* token.h: the `gohub token` command, which prints a development token
 * signed with the configured auth.secret_key. Main thread. */
#ifndef HUB_TOKEN_H
#define HUB_TOKEN_H

#include <stdint.h>

/* Parses a duration such as "90s", "15m", "1h", "2d", "500ms" or "0"
 * (none). Returns 0 and *ms, or -1 when s is not one. */
int hub_token_parse_ttl(const char *s, uint64_t *ms);

/* Runs `gohub token ARGS` (argv[0] is "token"). Prints the token on
 * stdout. Returns the exit code: 0, 1 (configuration or signing error), 2
 * (usage). */
int hub_token_main(int argc, char **argv);

#endif
