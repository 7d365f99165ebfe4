/* frame.h: immutable refcounted outbound byte blocks. A WebSocket message sent
 * to many connections is encoded once into a hub_frame_t and each recipient's
 * queue holds a reference (server frames are unmasked, so the bytes are the
 * same for everyone). HTTP responses and wslay's control frames travel in
 * frames too, so one ordered queue carries everything. Worker-local: the
 * refcount is a plain integer; a frame never crosses threads.
 *
 * Also: parsing of client frame headers (RFC 6455 §5.2), which the
 * connection uses to hand wslay one frame at a time. */
#ifndef HUB_FRAME_H
#define HUB_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct hub_frame_s {
    uint32_t refcnt;
    uint32_t len;    /* bytes in data[] */
    uint8_t kind;    /* HUB_MT_* message type for the metrics; 0 = not a message */
    uint8_t data[];
};

enum {
    HUB_WS_OP_CONT = 0x0,
    HUB_WS_OP_TEXT = 0x1,
    HUB_WS_OP_BINARY = 0x2,
    HUB_WS_OP_CLOSE = 0x8,
    HUB_WS_OP_PING = 0x9,
    HUB_WS_OP_PONG = 0xA,
};

#define HUB_WS_MAX_HEADER 14

/* A new frame of len bytes (uninitialised) with one reference, or NULL. */
hub_frame_t *hub_frame_alloc(size_t len);

/* A new frame holding a copy of len bytes, or NULL. */
hub_frame_t *hub_frame_copy(const void *p, size_t len);

static inline hub_frame_t *hub_frame_ref(hub_frame_t *f)
{
    f->refcnt++;
    return f;
}

/* Drops one reference; frees on the last. NULL is allowed. */
void hub_frame_release(hub_frame_t *f);

/* Bytes of header an unmasked server frame with this payload length needs. */
size_t hub_ws_header_len(uint64_t payload_len);

/* Writes a FIN=1 unmasked header; returns its length. out holds >= 10 bytes. */
size_t hub_ws_write_header(uint8_t *out, int opcode, uint64_t payload_len);

/* A complete FIN=1 server frame (header + payload copy), or NULL. */
hub_frame_t *hub_frame_ws(int opcode, const void *payload, size_t len);

/* A close frame with code (network order) and reason (truncated to fit the
 * 125-byte control payload), or NULL. */
hub_frame_t *hub_frame_ws_close(uint16_t code, const char *reason);

typedef struct {
    uint8_t fin, rsv, opcode, masked;
    uint8_t header_len;      /* 2..14 */
    uint64_t payload_len;
} hub_ws_hdr_t;

/* Parses a frame header at p (n bytes available). Returns the header length
 * when complete (and fills *h), or 0 when more bytes are needed. Performs no
 * validation: wslay judges the frame; this only finds its end. */
size_t hub_ws_parse_header(const uint8_t *p, size_t n, hub_ws_hdr_t *h);

/* 1 when code may be sent in a close frame: 1000-4999 but the reserved
 * 1004, 1005, 1006 and 1015 (RFC 6455 section 7.4). */
int hub_ws_close_code_sendable(int code);

/* 1 when p..p+n is exactly one whole unmasked text frame (FIN, no RSV, the
 * length its header gives), as a server sends it; *payload, *plen then give
 * its payload. For frames that come from elsewhere (another node). */
int hub_ws_is_text_frame(const uint8_t *p, size_t n, const uint8_t **payload, size_t *plen);

/* A frame's bytes shared across threads (cross-worker fan-out): immutable,
 * atomic refcount. Each receiving worker copies it into its own hub_frame_t,
 * so the worker-local frames keep their plain refcounts. */
typedef struct {
    atomic_uint refcnt;
    uint32_t len;
    uint8_t kind;    /* the frame's kind, carried over */
    uint8_t data[];
} hub_blob_t;

/* A blob with a copy of len bytes at p, of kind, with `refs` references,
 * or NULL. */
hub_blob_t *hub_blob_new(const void *p, size_t len, uint8_t kind, unsigned refs);

/* A blob with a copy of f's bytes and `refs` references, or NULL. */
hub_blob_t *hub_blob_from_frame(const hub_frame_t *f, unsigned refs);
void hub_blob_release(hub_blob_t *b);

#endif
