/* frame.c: refcounted outbound frames and RFC 6455 header encoding and
 * parsing. Worker-local. */
#include "frame.h"

#include <string.h>

#include "utf8.h"

hub_frame_t *hub_frame_alloc(size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    hub_frame_t *f = malloc(sizeof(*f) + len);
    if (f == NULL)
        return NULL;
    f->refcnt = 1;
    f->len = (uint32_t)len;
    f->kind = 0;
    return f;
}

hub_frame_t *hub_frame_copy(const void *p, size_t len)
{
    hub_frame_t *f = hub_frame_alloc(len);
    if (f != NULL && len)
        memcpy(f->data, p, len);
    return f;
}

void hub_frame_release(hub_frame_t *f)
{
    if (f == NULL)
        return;
    hub_assert(f->refcnt > 0);
    if (--f->refcnt == 0)
        free(f);
}

size_t hub_ws_header_len(uint64_t payload_len)
{
    if (payload_len < 126)
        return 2;
    if (payload_len <= 0xFFFF)
        return 4;
    return 10;
}

size_t hub_ws_write_header(uint8_t *out, int opcode, uint64_t payload_len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

hub_frame_t *hub_frame_ws(int opcode, const void *payload, size_t len)
{
    size_t hl = hub_ws_header_len(len);
    hub_frame_t *f = hub_frame_alloc(hl + len);
    if (f == NULL)
        return NULL;
    hub_ws_write_header(f->data, opcode, len);
    if (len)
        memcpy(f->data + hl, payload, len);
    return f;
}

hub_frame_t *hub_frame_ws_close(uint16_t code, const char *reason)
{
    /* a reason is UTF-8 (RFC 6455 5.5.1): a handler's bad bytes become
     * U+FFFD, and a long one ends before the character that would not fit */
    uint8_t payload[125];
    size_t rlen = reason ? hub_utf8_clean((char *)payload + 2, sizeof(payload) - 2, reason,
                                          strlen(reason))
                         : 0;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    return hub_frame_ws(HUB_WS_OP_CLOSE, payload, 2 + rlen);
}

size_t hub_ws_parse_header(const uint8_t *p, size_t n, hub_ws_hdr_t *h)
{
    if (n < 2)
        return 0;
    h->fin = p[0] >> 7;
    h->rsv = (p[0] >> 4) & 7;
    h->opcode = p[0] & 0x0F;
    h->masked = p[1] >> 7;
    uint8_t len7 = p[1] & 0x7F;
    size_t hl = 2;
    if (len7 == 126)
        hl += 2;
    else if (len7 == 127)
        hl += 8;
    if (h->masked)
        hl += 4;
    if (n < hl)
        return 0;
    if (len7 < 126) {
        h->payload_len = len7;
    } else if (len7 == 126) {
        h->payload_len = (uint64_t)p[2] << 8 | p[3];
    } else {
        h->payload_len = 0;
        for (int i = 0; i < 8; i++)
            h->payload_len = h->payload_len << 8 | p[2 + i];
    }
    h->header_len = (uint8_t)hl;
    return hl;
}

int hub_ws_close_code_sendable(int code)
{
    return code >= 1000 && code <= 4999 && code != 1004 && code != 1005 && code != 1006 &&
           code != 1015;
}

int hub_ws_is_text_frame(const uint8_t *p, size_t n, const uint8_t **payload, size_t *plen)
{
    hub_ws_hdr_t h;
    size_t hl = hub_ws_parse_header(p, n, &h);
    if (hl == 0 || !h.fin || h.rsv || h.masked || h.opcode != HUB_WS_OP_TEXT ||
        h.payload_len != n - hl)
        return 0;
    *payload = p + hl;
    *plen = n - hl;
    return 1;
}

hub_blob_t *hub_blob_new(const void *p, size_t len, uint8_t kind, unsigned refs)
{
    hub_blob_t *b = malloc(sizeof(*b) + len);
    if (b == NULL)
        return NULL;
    atomic_init(&b->refcnt, refs);
    b->len = (uint32_t)len;
    b->kind = kind;
    memcpy(b->data, p, len);
    return b;
}

hub_blob_t *hub_blob_from_frame(const hub_frame_t *f, unsigned refs)
{
    return hub_blob_new(f->data, f->len, f->kind, refs);
}

void hub_blob_release(hub_blob_t *b)
{
    if (b != NULL && atomic_fetch_sub(&b->refcnt, 1) == 1)
        free(b);
}
