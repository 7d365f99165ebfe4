/* auth.c: JWT verification on top of libjwt 1.10, which checks nothing but
 * the signature (and accepts alg "none" when given no key). The order of
 * the checks: length cap, three strict base64url parts, header (alg pinned
 * to the allowed set and to a key slot, typ, kid, crit), payload JSON,
 * signature (libjwt, always with a key), then the claims. Any thread (the
 * context is immutable); see auth.h. */
#include "auth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <jwt.h>
#include <math.h>
#include <stdarg.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "jsonscan.h"
#include "utf8.h"

#define MAX_KEY_FILE (64 * 1024)
#define MAX_MEMBERS 256        /* members of the header or payload object */
#define MAX_PERMISSIONS 256
#define MAX_STRING_CLAIM 256   /* username and each permission, bytes */
#define ALG_BIT(a) (1u << (unsigned)(a))
#define HS_ALGS (ALG_BIT(JWT_ALG_HS256) | ALG_BIT(JWT_ALG_HS384) | ALG_BIT(JWT_ALG_HS512))
#define RS_ALGS (ALG_BIT(JWT_ALG_RS256) | ALG_BIT(JWT_ALG_RS384) | ALG_BIT(JWT_ALG_RS512))
#define ES_ALGS (ALG_BIT(JWT_ALG_ES256) | ALG_BIT(JWT_ALG_ES384) | ALG_BIT(JWT_ALG_ES512))

struct hub_auth_s {
    uint32_t algs;             /* ALG_BIT of every accepted algorithm */
    unsigned char *secret;     /* HS* key; NULL = none */
    size_t secret_len;
    unsigned char *pem;        /* RS* / ES* public key (PEM text); NULL = none */
    size_t pem_len;
    char *issuer;              /* NULL = not checked */
    char *audience;            /* NULL = not checked */
    uint64_t leeway_ms;
    size_t max_token_bytes;
    int require_exp;
};

static const struct {
    const char *name, *text;
} reasons[HUB_AUTH_NREASONS] = {
    [HUB_AUTH_OK] = { "ok", "ok" },
    [HUB_AUTH_NO_TOKEN] = { "no_token", "token required" },
    [HUB_AUTH_TOO_LONG] = { "too_long", "token too long" },
    [HUB_AUTH_MALFORMED] = { "malformed", "malformed token" },
    [HUB_AUTH_BAD_ALG] = { "bad_alg", "token algorithm not allowed" },
    [HUB_AUTH_BAD_SIGNATURE] = { "bad_signature", "bad token signature" },
    [HUB_AUTH_EXPIRED] = { "expired", "token expired" },
    [HUB_AUTH_NOT_YET_VALID] = { "not_yet_valid", "token not yet valid (nbf)" },
    [HUB_AUTH_MISSING_EXP] = { "missing_exp", "token has no exp" },
    [HUB_AUTH_BAD_ISSUER] = { "bad_issuer", "wrong token issuer" },
    [HUB_AUTH_BAD_AUDIENCE] = { "bad_audience", "wrong token audience" },
    [HUB_AUTH_BAD_CLAIMS] = { "bad_claims", "bad token claims" },
    [HUB_AUTH_INTERNAL] = { "internal", "internal error" },
};

const char *hub_auth_reason_name(hub_auth_reason_t r)
{
    return (unsigned)r < HUB_AUTH_NREASONS ? reasons[r].name : "unknown";
}

const char *hub_auth_reason_text(hub_auth_reason_t r)
{
    return (unsigned)r < HUB_AUTH_NREASONS ? reasons[r].text : "unknown";
}

int hub_auth_reason_code(hub_auth_reason_t r)
{
    return r == HUB_AUTH_OK ? 0 : (r == HUB_AUTH_EXPIRED ? 2002 : 2003);
}

/* ---- building a context -------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Reads the whole key file (at most MAX_KEY_FILE bytes). */
static unsigned char *read_key_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, errlen, "auth.public_key_file: cannot open '%s': %s", path,
                strerror(errno));
        return NULL;
    }
    unsigned char *buf = malloc(MAX_KEY_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_KEY_FILE + 1, f) : 0;
    int rerr = ferror(f);
    fclose(f);
    if (buf == NULL || rerr || n == 0 || n > MAX_KEY_FILE) {
        set_err(err, errlen, "auth.public_key_file: '%s' is %s", path,
                buf == NULL ? "not readable (out of memory)"
                : rerr      ? "not readable"
                : n == 0    ? "empty"
                            : "larger than 64 KiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The public algorithms key can verify: RS* for RSA, ES256/384/512 for an
 * EC key on P-256/P-384/P-521. Returns 0 (and the mask) or -1 + err. */
static int key_algs(const unsigned char *pem, size_t len, const char *path, uint32_t *mask,
                    char *err, size_t errlen)
{
    if (strstr((const char *)pem, "PRIVATE KEY") != NULL) {
        set_err(err, errlen,
                "auth.public_key_file: '%s' holds a private key; give the public key "
                "(openssl pkey -in KEY -pubout)",
                path);
        return -1;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (pk == NULL) {
        set_err(err, errlen,
                "auth.public_key_file: '%s' is not a PEM public key (-----BEGIN PUBLIC KEY-----)",
                path);
        return -1;
    }
    int rc = 0;
    *mask = 0;
    int type = EVP_PKEY_get_base_id(pk);
    if (type == EVP_PKEY_RSA) {
        *mask = RS_ALGS;
    } else if (type == EVP_PKEY_EC) {
        char group[64] = "";
        size_t gl = 0;
        EVP_PKEY_get_group_name(pk, group, sizeof(group), &gl);
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            *mask = ALG_BIT(JWT_ALG_ES256);
        else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            *mask = ALG_BIT(JWT_ALG_ES384);
        else if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0)
            *mask = ALG_BIT(JWT_ALG_ES512);
        else {
            set_err(err, errlen, "auth.public_key_file: '%s': EC curve '%s' is not P-256, "
                                 "P-384 or P-521", path, group);
            rc = -1;
        }
    } else {
        set_err(err, errlen, "auth.public_key_file: '%s' is neither an RSA nor an EC key", path);
        rc = -1;
    }
    EVP_PKEY_free(pk);
    return rc;
}

static char *dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

int hub_auth_new(const hub_config_t *cfg, hub_auth_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->auth_enabled)
        return 0;
    hub_auth_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        set_err(err, errlen, "auth: out of memory");
        return HUB_ENOMEM;
    }
    a->leeway_ms = cfg->auth_leeway_ms;
    a->max_token_bytes = cfg->auth_max_token_bytes;
    a->require_exp = cfg->auth_require_exp;
    a->issuer = dup_or_null(cfg->auth_issuer);
    a->audience = dup_or_null(cfg->auth_audience);
    if ((cfg->auth_issuer[0] && a->issuer == NULL) ||
        (cfg->auth_audience[0] && a->audience == NULL)) {
        set_err(err, errlen, "auth: out of memory");
        goto fail;
    }
    if (cfg->auth_secret_key[0]) {
        a->secret_len = strlen(cfg->auth_secret_key);
        a->secret = (unsigned char *)strdup(cfg->auth_secret_key);
        if (a->secret == NULL) {
            set_err(err, errlen, "auth: out of memory");
            goto fail;
        }
    }
    uint32_t usable = a->secret ? HS_ALGS : 0;
    const char *path = cfg->auth_public_key_file;
    if (path[0]) {
        uint32_t km;
        a->pem = read_key_file(path, &a->pem_len, err, errlen);
        if (a->pem == NULL || key_algs(a->pem, a->pem_len, path, &km, err, errlen) != 0)
            goto fail;
        usable |= km;
    }
    uint32_t want = 0;
    if (cfg->auth_algorithms.n == 0) {
        /* the default: HS256 with a secret, RS256 / ES256 with a key file */
        want = ALG_BIT(JWT_ALG_HS256) | ALG_BIT(JWT_ALG_RS256) | ALG_BIT(JWT_ALG_ES256);
    }
    for (size_t i = 0; i < cfg->auth_algorithms.n; i++) {
        jwt_alg_t alg = jwt_str_alg(cfg->auth_algorithms.items[i]);
        if (alg != JWT_ALG_NONE && alg != JWT_ALG_INVAL)
            want |= ALG_BIT(alg);
    }
    a->algs = want & usable;
    if ((want & ~HS_ALGS) && a->pem && !(a->algs & ~HS_ALGS)) {
        set_err(err, errlen, "auth.public_key_file: '%s': %s cannot verify any of the "
                             "algorithms auth.algorithms allows",
                path, (usable & RS_ALGS) ? "an RSA key" : "this EC key");
        goto fail;
    }
    if (a->algs == 0) {
        set_err(err, errlen, "auth.algorithms: no allowed algorithm has a key "
                             "(auth.secret_key for HS*, auth.public_key_file for RS* or ES*)");
        goto fail;
    }
    *out = a;
    return 0;
fail:
    hub_auth_free(a);
    return HUB_ECONFIG;
}

void hub_auth_free(hub_auth_t *a)
{
    if (a == NULL)
        return;
    if (a->secret)
        memset(a->secret, 0, a->secret_len);
    free(a->secret);
    free(a->pem);
    free(a->issuer);
    free(a->audience);
    free(a);
}

/* ---- parsing helpers ----------------------------------------------------- */

static int b64url_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

/* 1 when s is canonical unpadded base64url: the alphabet only, a length
 * that is not 1 mod 4, and zero bits past the last byte (libjwt's decoder
 * skips stray characters, so it cannot be left to judge). */
static int b64url_ok(const char *s, size_t n)
{
    if (n % 4 == 1)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (b64url_val((unsigned char)s[i]) < 0)
            return 0;
    if (n % 4 == 2 && (b64url_val((unsigned char)s[n - 1]) & 0x0f))
        return 0;
    if (n % 4 == 3 && (b64url_val((unsigned char)s[n - 1]) & 0x03))
        return 0;
    return 1;
}

/* Decodes a segment b64url_ok accepted into a malloc'd, NUL-terminated
 * buffer. NULL on ENOMEM. */
static char *b64url_decode(const char *s, size_t n, size_t *outlen)
{
    char *out = malloc(n * 3 / 4 + 1);
    if (out == NULL)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 6) | (uint32_t)b64url_val((unsigned char)s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* 1 when p..p+n is well-formed UTF-8 (no overlongs, surrogates or values
 * past U+10FFFF) without raw control characters other than JSON's blanks.
 * JSON text must be UTF-8 and may hold raw controls nowhere else; cJSON
 * would take a raw NUL inside a string and cut the string there. */
static int text_ok(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return 0;
            i++;
            continue;
        }
        size_t len = hub_utf8_seq(p + i, p + n);
        if (len == 0)
            return 0;
        i += len;
    }
    return 1;
}

/* Parses a decoded header or payload: a JSON object of at most
 * MAX_MEMBERS members, no duplicate names (RFC 7515 §4: cJSON would keep
 * the first, jansson the last), no \u0000 (cJSON cuts strings there),
 * valid UTF-8 (text_ok). NULL when it is not one. */
static cJSON *parse_object(const char *text, size_t n)
{
    if (!text_ok((const unsigned char *)text, n) || hub_json_has_nul(text, n))
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (j == NULL)
        return NULL;
    if (!cJSON_IsObject(j) || !hub_json_blank(end, n - (size_t)(end - text)))
        goto bad;
    int count = 0;
    for (const cJSON *a = j->child; a != NULL; a = a->next) {
        if (++count > MAX_MEMBERS)
            goto bad;
        for (const cJSON *b = j->child; b != a; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                goto bad;
    }
    return j;
bad:
    cJSON_Delete(j);
    return NULL;
}

/* The header's verdict: HUB_AUTH_OK with *alg set, or a reason. */
static hub_auth_reason_t check_header(const hub_auth_t *a, const cJSON *h, jwt_alg_t *alg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(h, "alg");
    if (!cJSON_IsString(v))
        return HUB_AUTH_MALFORMED;
    /* jwt_str_alg knows "none" (lower case only); "NONE" is JWT_ALG_INVAL.
     * Neither is ever in a->algs. */
    jwt_alg_t al = jwt_str_alg(v->valuestring);
    if (al == JWT_ALG_INVAL || al == JWT_ALG_NONE || !(a->algs & ALG_BIT(al)))
        return HUB_AUTH_BAD_ALG;
    v = cJSON_GetObjectItemCaseSensitive(h, "typ");
    if (v != NULL && (!cJSON_IsString(v) || strcasecmp(v->valuestring, "JWT") != 0))
        return HUB_AUTH_MALFORMED;
    /* gohub uses no kid; one naming a path is a probe (J10) */
    v = cJSON_GetObjectItemCaseSensitive(h, "kid");
    if (v != NULL && (!cJSON_IsString(v) || strpbrk(v->valuestring, "/\\") != NULL ||
                      strstr(v->valuestring, "..") != NULL))
        return HUB_AUTH_MALFORMED;
    /* RFC 7515 §4.1.11: extensions we do not understand must be refused */
    if (cJSON_GetObjectItemCaseSensitive(h, "crit") != NULL)
        return HUB_AUTH_MALFORMED;
    *alg = al;
    return HUB_AUTH_OK;
}

/* libjwt checks the signature of token (NUL-terminated), always with the
 * key of alg's slot, and must agree on the algorithm. */
static hub_auth_reason_t check_signature(const hub_auth_t *a, const char *token, jwt_alg_t alg)
{
    const unsigned char *key = (ALG_BIT(alg) & HS_ALGS) ? a->secret : a->pem;
    size_t klen = (ALG_BIT(alg) & HS_ALGS) ? a->secret_len : a->pem_len;
    if (key == NULL || klen == 0)
        return HUB_AUTH_BAD_ALG; /* never decode without a key (J3) */
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, key, (int)klen);
    if (rc != 0) {
        jwt_free(jwt);
        return rc == ENOMEM ? HUB_AUTH_INTERNAL : HUB_AUTH_BAD_SIGNATURE;
    }
    jwt_alg_t got = jwt_get_alg(jwt);
    jwt_free(jwt);
    return got == alg ? HUB_AUTH_OK : HUB_AUTH_BAD_ALG;
}

/* A NumericDate claim: 1 (and *v) when present and a number, 0 when
 * absent, -1 when present with another type ("never", null, ...). */
static int numeric_claim(const cJSON *p, const char *name, double *v)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, name);
    if (c == NULL)
        return 0;
    if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble))
        return -1;
    *v = c->valuedouble;
    return 1;
}

static int audience_has(const cJSON *aud, const char *want)
{
    if (cJSON_IsString(aud))
        return strcmp(aud->valuestring, want) == 0;
    if (!cJSON_IsArray(aud))
        return 0;
    for (const cJSON *e = aud->child; e != NULL; e = e->next)
        if (cJSON_IsString(e) && strcmp(e->valuestring, want) == 0)
            return 1;
    return 0;
}

static int user_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > HUB_AUTH_USER_ID_MAX || strncmp(s, "anon-", 5) == 0)
        return 0; /* anon-<client id> names anonymous connections only */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* The time claims, iss and aud. *deadline gets the wall-clock ms from
 * which the identity is expired (0 = never), *exp_s the exp claim. */
static hub_auth_reason_t check_claims(const hub_auth_t *a, const cJSON *p, uint64_t now_ms,
                                      uint64_t *deadline, int64_t *exp_s)
{
    double exp = 0, nbf = 0, iat = 0, now = (double)now_ms, lw = (double)a->leeway_ms;
    int has_exp = numeric_claim(p, "exp", &exp);
    int has_nbf = numeric_claim(p, "nbf", &nbf);
    if (has_exp < 0 || has_nbf < 0 || numeric_claim(p, "iat", &iat) < 0)
        return HUB_AUTH_BAD_CLAIMS; /* J5: "exp": "never" is not "no exp" */
    *deadline = 0;
    *exp_s = 0;
    if (has_exp) {
        double end = exp * 1000.0 + lw;
        if (now >= end)
            return HUB_AUTH_EXPIRED;
        *deadline = end >= 1.8e19 ? UINT64_MAX : (uint64_t)end;
        /* reported as expires_at: an integer a JSON reader keeps exactly */
        *exp_s = exp >= (double)HUB_EXACT_MAX ? HUB_EXACT_MAX : (int64_t)exp;
    } else if (a->require_exp) {
        return HUB_AUTH_MISSING_EXP;
    }
    if (has_nbf && nbf * 1000.0 - lw > now)
        return HUB_AUTH_NOT_YET_VALID;
    if (a->issuer != NULL) {
        const cJSON *iss = cJSON_GetObjectItemCaseSensitive(p, "iss");
        if (!cJSON_IsString(iss) || strcmp(iss->valuestring, a->issuer) != 0)
            return HUB_AUTH_BAD_ISSUER;
    }
    if (a->audience != NULL &&
        !audience_has(cJSON_GetObjectItemCaseSensitive(p, "aud"), a->audience))
        return HUB_AUTH_BAD_AUDIENCE;
    return HUB_AUTH_OK;
}

/* Builds the identity from the payload p (its text: json, jlen). */
static hub_auth_reason_t make_identity(const cJSON *p, const char *json, size_t jlen,
                                       uint64_t deadline, int64_t exp_s, hub_identity_t **out)
{
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(p, "user_id");
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(p, "sub");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(p, "username");
    const cJSON *perms = cJSON_GetObjectItemCaseSensitive(p, "permissions");
    if ((uid != NULL && !cJSON_IsString(uid)) || (sub != NULL && !cJSON_IsString(sub)) ||
        (name != NULL && !cJSON_IsString(name)) || (perms != NULL && !cJSON_IsArray(perms)))
        return HUB_AUTH_BAD_CLAIMS;
    /* user_id wins when it is a non-empty string, else sub */
    const char *user = uid != NULL && uid->valuestring[0] ? uid->valuestring
                       : sub != NULL                      ? sub->valuestring
                                                          : "";
    if (!user_id_ok(user) || (name != NULL && strlen(name->valuestring) > MAX_STRING_CLAIM))
        return HUB_AUTH_BAD_CLAIMS;
    size_t np = 0, strbytes = strlen(user) + 1 + (name ? strlen(name->valuestring) + 1 : 0);
    for (const cJSON *e = perms ? perms->child : NULL; e != NULL; e = e->next) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) > MAX_STRING_CLAIM ||
            ++np > MAX_PERMISSIONS)
            return HUB_AUTH_BAD_CLAIMS;
        strbytes += strlen(e->valuestring) + 1;
    }
    /* one block: the struct, the permission pointers, then the strings */
    size_t size = sizeof(hub_identity_t) + np * sizeof(char *) + strbytes + jlen + 1;
    hub_identity_t *id = malloc(size);
    if (id == NULL)
        return HUB_AUTH_INTERNAL;
    const char **pv = (const char **)(id + 1);
    char *s = (char *)(pv + np);
#define PUT(dst, src)                     \
    do {                                  \
        size_t l_ = strlen(src) + 1;      \
        memcpy(s, (src), l_);             \
        (dst) = s;                        \
        s += l_;                          \
    } while (0)
    PUT(id->user_id, user);
    id->username = NULL;
    if (name != NULL)
        PUT(id->username, name->valuestring);
    size_t k = 0;
    for (const cJSON *e = perms ? perms->child : NULL; e != NULL; e = e->next, k++)
        PUT(pv[k], e->valuestring);
#undef PUT
    memcpy(s, json, jlen);
    s[jlen] = '\0';
    id->claims_json = s;
    id->claims_len = jlen;
    id->permissions = perms != NULL ? (const char *const *)pv : NULL;
    id->npermissions = np;
    id->exp = exp_s;
    id->expires_ms = deadline;
    *out = id;
    return HUB_AUTH_OK;
}

/* ---- verification -------------------------------------------------------- */

hub_auth_reason_t hub_auth_verify(const hub_auth_t *a, const char *token, size_t len,
                                  uint64_t now_ms, hub_identity_t **out)
{
    *out = NULL;
    if (token == NULL || len == 0)
        return HUB_AUTH_NO_TOKEN;
    if (len > a->max_token_bytes)
        return HUB_AUTH_TOO_LONG; /* before any parsing (J10: 64 KiB tokens) */
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
        return HUB_AUTH_MALFORMED; /* not exactly three parts */
    size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1);
    size_t sl = len - (size_t)(d2 + 1 - token);
    if (hl == 0 || pl == 0 || !b64url_ok(token, hl) || !b64url_ok(d1 + 1, pl) ||
        !b64url_ok(d2 + 1, sl))
        return HUB_AUTH_MALFORMED;

    hub_auth_reason_t r = HUB_AUTH_INTERNAL;
    char *htext = NULL, *ptext = NULL, *copy = NULL;
    cJSON *hdr = NULL, *payload = NULL;
    size_t htl, ptl;
    if ((htext = b64url_decode(token, hl, &htl)) == NULL ||
        (ptext = b64url_decode(d1 + 1, pl, &ptl)) == NULL)
        goto out;
    r = HUB_AUTH_MALFORMED;
    if ((hdr = parse_object(htext, htl)) == NULL)
        goto out;
    jwt_alg_t alg = JWT_ALG_INVAL;
    if ((r = check_header(a, hdr, &alg)) != HUB_AUTH_OK)
        goto out;
    r = HUB_AUTH_MALFORMED;
    if ((payload = parse_object(ptext, ptl)) == NULL)
        goto out;
    r = HUB_AUTH_INTERNAL;
    if ((copy = malloc(len + 1)) == NULL)
        goto out;
    memcpy(copy, token, len);
    copy[len] = '\0';
    if ((r = check_signature(a, copy, alg)) != HUB_AUTH_OK)
        goto out;
    uint64_t deadline;
    int64_t exp_s;
    if ((r = check_claims(a, payload, now_ms, &deadline, &exp_s)) != HUB_AUTH_OK)
        goto out;
    r = make_identity(payload, ptext, ptl, deadline, exp_s, out);
out:
    cJSON_Delete(hdr);
    cJSON_Delete(payload);
    free(htext);
    free(ptext);
    free(copy);
    return r;
}

void hub_identity_free(hub_identity_t *id)
{
    free(id);
}

/* ---- minting (gohub token) ----------------------------------------------- */

char *hub_auth_mint(const hub_config_t *cfg, const hub_token_req_t *req, uint64_t now_ms,
                    char *err, size_t errlen)
{
    if (cfg->auth_secret_key[0] == '\0') {
        set_err(err, errlen, "no auth.secret_key configured (set it in the config file, or "
                             "GOHUB_AUTH_SECRET_KEY): gohub token signs HS tokens with it");
        return NULL;
    }
    jwt_alg_t alg = cfg->auth_algorithms.n == 0 ? JWT_ALG_HS256 : JWT_ALG_INVAL;
    for (size_t i = 0; i < cfg->auth_algorithms.n && alg == JWT_ALG_INVAL; i++) {
        jwt_alg_t x = jwt_str_alg(cfg->auth_algorithms.items[i]);
        if (x != JWT_ALG_INVAL && (ALG_BIT(x) & HS_ALGS))
            alg = x;
    }
    if (alg == JWT_ALG_INVAL) {
        set_err(err, errlen, "auth.algorithms allows no HS algorithm: gohub token can only "
                             "sign with auth.secret_key (HS256/HS384/HS512)");
        return NULL;
    }
    if (req->user_id == NULL || !user_id_ok(req->user_id)) {
        set_err(err, errlen, "the user id must be 1 to %d characters, without control "
                             "characters, not starting with 'anon-'", HUB_AUTH_USER_ID_MAX);
        return NULL;
    }
    jwt_t *jwt = NULL;
    char *tok = NULL, *perms = NULL;
    int64_t now_s = (int64_t)(now_ms / 1000);
    if (jwt_new(&jwt) != 0)
        goto oom;
    int rc = jwt_add_grant(jwt, "sub", req->user_id);
    rc = rc ? rc : jwt_add_grant(jwt, "user_id", req->user_id);
    if (req->username)
        rc = rc ? rc : jwt_add_grant(jwt, "username", req->username);
    rc = rc ? rc : jwt_add_grant_int(jwt, "iat", (long)now_s);
    if (req->ttl_ms)
        rc = rc ? rc : jwt_add_grant_int(jwt, "exp", (long)(now_s + (int64_t)(req->ttl_ms / 1000)));
    if (cfg->auth_issuer[0])
        rc = rc ? rc : jwt_add_grant(jwt, "iss", cfg->auth_issuer);
    if (cfg->auth_audience[0])
        rc = rc ? rc : jwt_add_grant(jwt, "aud", cfg->auth_audience);
    if (req->permissions != NULL) {
        cJSON *o = cJSON_CreateObject();
        cJSON *arr = o ? cJSON_AddArrayToObject(o, "permissions") : NULL;
        for (size_t i = 0; arr && i < req->npermissions; i++) {
            cJSON *s = cJSON_CreateString(req->permissions[i]);
            if (s == NULL || !cJSON_AddItemToArray(arr, s)) {
                cJSON_Delete(s);
                arr = NULL;
            }
        }
        perms = arr ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        rc = rc ? rc : (perms ? jwt_add_grants_json(jwt, perms) : ENOMEM);
    }
    rc = rc ? rc
            : jwt_set_alg(jwt, alg, (const unsigned char *)cfg->auth_secret_key,
                          (int)strlen(cfg->auth_secret_key));
    if (rc != 0)
        goto oom;
    /* libjwt 1.10 allocates with malloc (no jwt_set_alloc call here) */
    tok = jwt_encode_str(jwt);
    if (tok == NULL)
        goto oom;
    free(perms);
    jwt_free(jwt);
    return tok;
oom:
    set_err(err, errlen, "cannot build the token (out of memory)");
    free(perms);
    jwt_free(jwt);
    return NULL;
}
