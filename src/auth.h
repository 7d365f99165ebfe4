/* auth.h: JWT verification (libjwt 1.10 + gohub's own claim checks) and
 * the identity a verified token gives a connection. libjwt only checks
 * signatures; everything else that makes a token acceptable is decided
 * here: the length cap, the algorithm pinned to auth.algorithms and to the
 * key slot it belongs to, exp, nbf, iss, aud and the shape of the claims.
 *
 * Threads: a context is built on one thread (main: start, -t, or a config
 * reload) and is immutable afterwards, so any number of threads may call
 * hub_auth_verify on it at once. Its owner frees it with hub_auth_free once
 * no thread can still be using it (a reload: after every worker swapped to
 * the new context). Identities belong to whoever received them. */
#ifndef HUB_AUTH_H
#define HUB_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct hub_auth_s hub_auth_t;

/* Why a token was refused. The names (hub_auth_reason_name) are a stable
 * API: the metrics count auth failures by them, so add reasons at the end
 * and never rename one. */
typedef enum {
    HUB_AUTH_OK = 0,
    HUB_AUTH_NO_TOKEN,       /* "no_token": empty or absent */
    HUB_AUTH_TOO_LONG,       /* "too_long": over auth.max_token_bytes */
    HUB_AUTH_MALFORMED,      /* "malformed": not 3 base64url parts, header/payload not JSON objects, bad typ/kid/crit */
    HUB_AUTH_BAD_ALG,        /* "bad_alg": alg not in auth.algorithms (none/NONE included) or not usable with the key */
    HUB_AUTH_BAD_SIGNATURE,  /* "bad_signature" */
    HUB_AUTH_EXPIRED,        /* "expired": exp + leeway has passed */
    HUB_AUTH_NOT_YET_VALID,  /* "not_yet_valid": nbf - leeway is in the future */
    HUB_AUTH_MISSING_EXP,    /* "missing_exp": no exp while auth.require_exp */
    HUB_AUTH_BAD_ISSUER,     /* "bad_issuer": iss missing or not auth.issuer */
    HUB_AUTH_BAD_AUDIENCE,   /* "bad_audience": aud missing or without auth.audience */
    HUB_AUTH_BAD_CLAIMS,     /* "bad_claims": a claim of the wrong type (exp "never", ...),
                                no user id, or one that is too long or reserved */
    HUB_AUTH_INTERNAL,       /* "internal": out of memory */
    HUB_AUTH_NREASONS
} hub_auth_reason_t;

/* What a verified token says about its holder. One allocation: every
 * pointer points inside it; free it with hub_identity_free. */
typedef struct hub_identity_s {
    const char *user_id;          /* user_id claim, else sub; never NULL */
    const char *username;         /* NULL when the token has none */
    const char *const *permissions; /* NULL when the token has no permissions claim */
    size_t npermissions;
    int64_t exp;                  /* the exp claim in seconds (truncated); 0 = none */
    uint64_t expires_ms;          /* wall-clock ms from which it is expired
                                     (exp + auth.leeway); 0 = never */
    const char *claims_json;      /* the verified payload, exactly as signed */
    size_t claims_len;
} hub_identity_t;

/* Longest user id a token may carry (bytes). */
#define HUB_AUTH_USER_ID_MAX 128

/* Builds the context auth.* of cfg describes (copies what it needs: cfg
 * may be freed afterwards); reads auth.public_key_file once. With
 * auth.enabled false, *out = NULL and 0 is returned: callers treat a NULL
 * context as "auth disabled". Returns 0, or HUB_ECONFIG with one line
 * "auth.public_key_file: ..." in err (a missing or unreadable file, not a
 * PEM public key, a key no allowed algorithm can use). */
int hub_auth_new(const hub_config_t *cfg, hub_auth_t **out, char *err, size_t errlen);

/* Frees a context; NULL is allowed. */
void hub_auth_free(hub_auth_t *a);

/* Verifies token (len bytes, need not be NUL-terminated) at wall-clock
 * time now_ms. On HUB_AUTH_OK *out gets a new identity (the caller owns
 * it); otherwise *out is NULL and the reason says why. Never crashes on
 * any input; reads at most auth.max_token_bytes of token. */
hub_auth_reason_t hub_auth_verify(const hub_auth_t *a, const char *token, size_t len,
                                  uint64_t now_ms, hub_identity_t **out);

/* The stable snake_case name of a reason ("ok", "expired", ...), for
 * metrics labels and logs. */
const char *hub_auth_reason_name(hub_auth_reason_t r);

/* A short human text ("token expired", "bad signature", ...). */
const char *hub_auth_reason_text(hub_auth_reason_t r);

/* The protocol error code of a refusal: 2002 for HUB_AUTH_EXPIRED, 2003
 * for the others (0 for HUB_AUTH_OK). */
int hub_auth_reason_code(hub_auth_reason_t r);

/* Frees an identity; NULL is allowed. */
void hub_identity_free(hub_identity_t *id);

/* 1 when id has an exp and it has passed (with the leeway) at now_ms. */
static inline int hub_identity_expired(const hub_identity_t *id, uint64_t now_ms)
{
    return id->expires_ms != 0 && now_ms >= id->expires_ms;
}

/* A development token (gohub token). */
typedef struct {
    const char *user_id;            /* required */
    const char *username;           /* NULL = none */
    const char *const *permissions; /* NULL = no permissions claim */
    size_t npermissions;
    uint64_t ttl_ms;                /* 0 = no exp claim */
} hub_token_req_t;

/* Signs a token for req with cfg's auth.secret_key and the first HS
 * algorithm of auth.algorithms (HS256 when the list is empty); adds iat,
 * exp (now + ttl), and iss / aud when auth.issuer / auth.audience are set.
 * Returns a malloc'd NUL-terminated token (caller frees), or NULL with the
 * reason in err (no secret key, no HS algorithm allowed, ...). */
char *hub_auth_mint(const hub_config_t *cfg, const hub_token_req_t *req, uint64_t now_ms,
                    char *err, size_t errlen);

#endif
