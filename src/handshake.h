/* handshake.h: RFC 6455 §4.2 opening-handshake validation and the 101
 * response. Pure; called by the worker owning the connection. */
#ifndef HUB_HANDSHAKE_H
#define HUB_HANDSHAKE_H

#include <stddef.h>

#include "config.h"
#include "http.h"

#define HUB_WS_ACCEPT_LEN 28

/* Validates an upgrade request. Returns 101 and fills accept (29 bytes with
 * NUL) when the handshake is acceptable; otherwise the HTTP status to answer
 * (400, 403, 405, 426) with *reason set to a static text. origins may be
 * empty (any Origin accepted). */
int hub_handshake_check(const hub_http_req_t *r, const hub_strlist_t *origins,
                        char accept[HUB_WS_ACCEPT_LEN + 1], const char **reason);

/* Computes base64(SHA-1(key + RFC 6455 GUID)). */
void hub_handshake_accept(const char *key, size_t keylen, char accept[HUB_WS_ACCEPT_LEN + 1]);

/* Writes the 101 response into out (capacity >= 160); returns its length. No
 * extension or subprotocol is ever negotiated. */
size_t hub_handshake_response(const char accept[HUB_WS_ACCEPT_LEN + 1], char *out, size_t cap);

#endif
