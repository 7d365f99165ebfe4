/* msg.h: the /ws protocol's server envelope, encoded once into a ready
 * WebSocket text frame:
 *   {"message_id":M,"message_type":"T","data":D,"timestamp":MS[,"request_id":R]}
 * and the error envelope. Pure apart from the node-wide message id counter
 * (atomic); any thread. */
#ifndef HUB_MSG_H
#define HUB_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#define HUB_NO_REQUEST (-1) /* request_id argument: no request_id field */

/* The next node-wide message id (> 0). */
uint64_t hub_msg_next_id(void);

/* Writes the decimal digits of v at out (at most 20 bytes, no NUL);
 * returns how many. */
size_t hub_msg_u64(char *out, uint64_t v);

/* Milliseconds since the epoch. */
uint64_t hub_now_ms(void);

/* Encodes an envelope. type is escaped; data is raw JSON text (NULL or empty
 * means {}). Returns a frame with one reference, or NULL on ENOMEM. */
hub_frame_t *hub_msg_frame(const char *type, const char *data, size_t data_len,
                           uint64_t message_id, int64_t request_id);

/* An error envelope: data {"code","message","request_id"[,"details"]} and a
 * top-level request_id (0 when none). details is raw JSON or NULL. */
hub_frame_t *hub_msg_error(int code, const char *message, int64_t request_id,
                           const char *details);

/* Appends s as a JSON string (with quotes) to buf, each byte that starts
 * no well-formed UTF-8 sequence as U+FFFD; returns the new length or
 * (size_t)-1 if it does not fit in cap. */
size_t hub_json_quote(char *buf, size_t len, size_t cap, const char *s, size_t n);

#endif
