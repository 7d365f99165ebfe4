/* auth_test.c: the JWT verifier against every case of the reliability
 * checklist it decides (J1-J10), plus the claims, the context build errors
 * and gohub token's minting. Tokens are made here: normal ones with libjwt,
 * odd ones (alg none, extra header fields, broken JSON, ...) by hand with an
 * HMAC from libcrypto. The RSA and EC key pairs are generated with the
 * openssl command into a temporary directory. Single threaded. */
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "base64.h"
#include "config.h"
#include "harness.h"

#define SECRET "test-secret-0123456789abcdef0123"
#define NOW_MS 1700000000000ULL /* 2023-11-14 */
#define NOW_S 1700000000LL

static char keydir[64];
static char rsa_priv[128], rsa_pub[128], ec_priv[128], ec_pub[128], ec384_pub[128];
static char *rsa_priv_pem, *rsa_pub_pem, *ec_priv_pem;

/* ---- helpers -------------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int make_keys(void)
{
    snprintf(keydir, sizeof(keydir), "/tmp/gohub_auth_test_XXXXXX");
    if (mkdtemp(keydir) == NULL)
        return -1;
    snprintf(rsa_priv, sizeof(rsa_priv), "%s/rsa.pem", keydir);
    snprintf(rsa_pub, sizeof(rsa_pub), "%s/rsa.pub", keydir);
    snprintf(ec_priv, sizeof(ec_priv), "%s/ec.pem", keydir);
    snprintf(ec_pub, sizeof(ec_pub), "%s/ec.pub", keydir);
    snprintf(ec384_pub, sizeof(ec384_pub), "%s/ec384.pub", keydir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem"
             " 2>/dev/null && openssl pkey -in rsa.pem -pubout -out rsa.pub"
             " && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem"
             " && openssl pkey -in ec.pem -pubout -out ec.pub"
             " && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.pem"
             " && openssl pkey -in ec384.pem -pubout -out ec384.pub"
             " && printf 'not a key\\n' > garbage.pem",
             keydir);
    if (system(cmd) != 0)
        return -1;
    rsa_priv_pem = slurp(rsa_priv);
    rsa_pub_pem = slurp(rsa_pub);
    ec_priv_pem = slurp(ec_priv);
    return rsa_priv_pem && rsa_pub_pem && ec_priv_pem ? 0 : -1;
}

static void drop_keys(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", keydir);
    if (keydir[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", keydir);
    free(rsa_priv_pem);
    free(rsa_pub_pem);
    free(ec_priv_pem);
}

/* Loads a config from YAML text (through a temporary file). */
static hub_config_t *config_of(const char *yaml)
{
    char path[96], err[512];
    snprintf(path, sizeof(path), "%s/cfg.yaml", keydir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fputs(yaml, f);
    fclose(f);
    hub_config_t *cfg = hub_config_load(path, err, sizeof(err));
    if (cfg == NULL)
        printf("  config error: %s\n", err);
    unlink(path);
    return cfg;
}

/* A context from "auth:" YAML lines (enabled: true is added). NULL on error
 * (the error is printed). */
static hub_auth_t *ctx_of(const char *auth_lines)
{
    char yaml[2048], err[512];
    snprintf(yaml, sizeof(yaml), "auth:\n  enabled: true\n%s", auth_lines);
    hub_config_t *cfg = config_of(yaml);
    if (cfg == NULL)
        return NULL;
    hub_auth_t *a = NULL;
    if (hub_auth_new(cfg, &a, err, sizeof(err)) != 0)
        printf("  hub_auth_new: %s\n", err);
    hub_config_free(cfg);
    return a;
}

/* The hub_auth_new error for these auth lines, into err; 0 when it built. */
static int ctx_error(const char *auth_lines, char *err, size_t errlen)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml), "auth:\n  enabled: true\n%s", auth_lines);
    hub_config_t *cfg = config_of(yaml);
    if (cfg == NULL) {
        snprintf(err, errlen, "(config refused)");
        return -1;
    }
    hub_auth_t *a = NULL;
    err[0] = '\0';
    int rc = hub_auth_new(cfg, &a, err, errlen);
    hub_auth_free(a);
    hub_config_free(cfg);
    return rc;
}

static hub_auth_t *hs_ctx(void)
{
    return ctx_of("  secret_key: " SECRET "\n");
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    char tmp[8192];
    size_t l = hub_base64_encode(in, n, tmp);
    size_t o = 0;
    for (size_t i = 0; i < l; i++) {
        char ch = tmp[i];
        if (ch == '=')
            break;
        out[o++] = ch == '+' ? '-' : (ch == '/' ? '_' : ch);
    }
    out[o] = '\0';
}

/* A token from header and payload JSON text, HMAC-signed with key (sha:
 * 256/384/512) or with an empty signature when key is NULL. */
static char *hand_token(const char *header, const char *payload, const char *key, int sha)
{
    static char tok[16384];
    char h[4096], p[8192];
    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)payload, strlen(payload), p);
    int n = snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    if (key != NULL) {
        unsigned char mac[64];
        unsigned int ml = 0;
        const EVP_MD *md = sha == 512 ? EVP_sha512() : (sha == 384 ? EVP_sha384() : EVP_sha256());
        HMAC(md, key, (int)strlen(key), (const unsigned char *)tok, (size_t)n - 1, mac, &ml);
        b64url(mac, ml, tok + n);
    }
    return tok;
}

static char *hs256(const char *payload)
{
    return hand_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SECRET, 256);
}

/* A token signed by libjwt with alg and key (PEM text or secret), for the
 * claims in payload. Caller frees. */
static char *lib_token(jwt_alg_t alg, const char *key, const char *payload)
{
    jwt_t *j = NULL;
    if (jwt_new(&j) != 0)
        return NULL;
    char *t = NULL;
    if (jwt_add_grants_json(j, payload) == 0 &&
        jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)) == 0)
        t = jwt_encode_str(j);
    jwt_free(j);
    return t;
}

static hub_auth_reason_t verify(const hub_auth_t *a, const char *tok, hub_identity_t **id)
{
    hub_identity_t *tmp = NULL;
    hub_auth_reason_t r = hub_auth_verify(a, tok, strlen(tok), NOW_MS, id ? id : &tmp);
    hub_identity_free(tmp);
    return r;
}

#define EXP_OK "\"exp\":1700003600"       /* an hour after NOW */
#define ASSERT_REASON(a, tok, want) ASSERT_STREQ(hub_auth_reason_name(verify((a), (tok), NULL)), (want))

/* ---- J1 and the identity -------------------------------------------------- */

TEST(j1_valid_hs256_and_identity)
{
    hub_auth_t *a = hs_ctx();
    ASSERT(a != NULL);
    const char *payload = "{\"sub\":\"s-1\",\"user_id\":\"alice\",\"username\":\"Alice A\","
                          "\"permissions\":[\"join:room\",\"admin:system\"]," EXP_OK ",\"x\":{\"y\":1}}";
    hub_identity_t *id = NULL;
    hub_auth_reason_t r = verify(a, hs256(payload), &id);
    ASSERT_EQ(r, HUB_AUTH_OK);
    ASSERT(id != NULL);
    ASSERT_STREQ(id->user_id, "alice"); /* user_id wins over sub */
    ASSERT_STREQ(id->username, "Alice A");
    ASSERT_EQ(id->npermissions, 2);
    ASSERT_STREQ(id->permissions[0], "join:room");
    ASSERT_STREQ(id->permissions[1], "admin:system");
    ASSERT_EQ(id->exp, 1700003600);
    ASSERT_EQ(id->expires_ms, 1700003600000ULL + 30000); /* default leeway 30 s */
    ASSERT_STREQ(id->claims_json, payload);            /* exactly as signed */
    ASSERT_EQ(id->claims_len, strlen(payload));
    ASSERT_EQ(hub_identity_expired(id, 1700003600000ULL + 29999), 0);
    ASSERT_EQ(hub_identity_expired(id, 1700003600000ULL + 30000), 1);
    hub_identity_free(id);
    hub_auth_free(a);
}

TEST(sub_is_the_user_id_without_user_id)
{
    hub_auth_t *a = hs_ctx();
    hub_identity_t *id = NULL;
    ASSERT_EQ(verify(a, hs256("{\"sub\":\"bob\"," EXP_OK "}"), &id), HUB_AUTH_OK);
    ASSERT_STREQ(id->user_id, "bob");
    ASSERT(id->username == NULL);
    ASSERT(id->permissions == NULL); /* no claim: the caller applies its default */
    ASSERT_EQ(id->npermissions, 0);
    hub_identity_free(id);
    /* an empty user_id falls back to sub too */
    ASSERT_EQ(verify(a, hs256("{\"user_id\":\"\",\"sub\":\"carol\"," EXP_OK "}"), &id),
              HUB_AUTH_OK);
    ASSERT_STREQ(id->user_id, "carol");
    hub_identity_free(id);
    /* an empty permissions array is "no permissions", not "no claim" */
    ASSERT_EQ(verify(a, hs256("{\"sub\":\"d\",\"permissions\":[]," EXP_OK "}"), &id),
              HUB_AUTH_OK);
    ASSERT(id->permissions != NULL);
    ASSERT_EQ(id->npermissions, 0);
    hub_identity_free(id);
    hub_auth_free(a);
}

TEST(hs384_and_hs512_when_allowed)
{
    hub_auth_t *a = ctx_of("  secret_key: " SECRET "\n  algorithms: [HS384, HS512]\n");
    ASSERT(a != NULL);
    const char *p = "{\"sub\":\"u\"," EXP_OK "}";
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS384\"}", p, SECRET, 384), "ok");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS512\"}", p, SECRET, 512), "ok");
    ASSERT_REASON(a, hs256(p), "bad_alg"); /* HS256 is not in the list */
    hub_auth_free(a);
}

/* ---- J2, J3 ----------------------------------------------------------------- */

TEST(j2_wrong_signature)
{
    hub_auth_t *a = hs_ctx();
    const char *p = "{\"sub\":\"u\"," EXP_OK "}";
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\"}", p, "another-secret", 256), "bad_signature");
    /* a valid token with a changed payload */
    char tok[4096];
    snprintf(tok, sizeof(tok), "%s", hs256(p));
    char *other = hs256("{\"sub\":\"admin\"," EXP_OK "}");
    char *dot1 = strchr(tok, '.'), *odot1 = strchr(other, '.');
    char sig[256];
    snprintf(sig, sizeof(sig), "%s", strrchr(tok, '.'));
    snprintf(dot1 + 1, sizeof(tok) - (size_t)(dot1 + 1 - tok), "%.*s%s",
             (int)(strrchr(other, '.') - odot1 - 1), odot1 + 1, sig);
    ASSERT_REASON(a, tok, "bad_signature");
    /* a truncated signature, and none at all */
    size_t n = strlen(hs256(p));
    snprintf(tok, sizeof(tok), "%.*s", (int)n - 4, hs256(p));
    ASSERT_REASON(a, tok, "bad_signature");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\"}", p, NULL, 0), "bad_signature");
    hub_auth_free(a);
}

TEST(j3_alg_none_rejected)
{
    hub_auth_t *a = hs_ctx();
    const char *p = "{\"sub\":\"u\"," EXP_OK "}";
    ASSERT_REASON(a, hand_token("{\"alg\":\"none\"}", p, NULL, 0), "bad_alg");
    ASSERT_REASON(a, hand_token("{\"alg\":\"NONE\"}", p, NULL, 0), "bad_alg");
    ASSERT_REASON(a, hand_token("{\"alg\":\"None\",\"typ\":\"JWT\"}", p, NULL, 0), "bad_alg");
    /* with a signature anyway, or an unknown alg */
    ASSERT_REASON(a, hand_token("{\"alg\":\"none\"}", p, SECRET, 256), "bad_alg");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS257\"}", p, SECRET, 256), "bad_alg");
    ASSERT_REASON(a, hand_token("{\"typ\":\"JWT\"}", p, SECRET, 256), "malformed"); /* no alg */
    ASSERT_REASON(a, hand_token("{\"alg\":256}", p, SECRET, 256), "malformed");
    hub_auth_free(a);
}

/* ---- J4 - J7 ------------------------------------------------------------------ */

TEST(j4_expired_with_leeway)
{
    hub_auth_t *a = hs_ctx(); /* leeway 30 s */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":1699999900}"), "expired"); /* 100 s ago */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":1699999970}"), "expired"); /* exactly 30 s */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":1699999980}"), "ok");      /* 20 s ago */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":0}"), "expired");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":-5}"), "expired");
    ASSERT_EQ(hub_auth_reason_code(verify(a, hs256("{\"sub\":\"u\",\"exp\":1}"), NULL)), 2002);
    hub_auth_free(a);
    a = ctx_of("  secret_key: " SECRET "\n  leeway: 0s\n");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":1699999999}"), "expired");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":1700000000}"), "expired"); /* exp == now */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":1700000000.5}"), "ok");
    /* a far exp is kept as an integer a JSON reader holds exactly (2^53) */
    hub_identity_t *id = NULL;
    ASSERT_EQ(verify(a, hs256("{\"sub\":\"u\",\"exp\":1e308}"), &id), HUB_AUTH_OK);
    ASSERT_EQ(id->exp, 9007199254740992LL);
    ASSERT_EQ(id->expires_ms, UINT64_MAX);
    hub_identity_free(id);
    hub_auth_free(a);
}

TEST(j5_missing_or_non_numeric_exp)
{
    hub_auth_t *a = hs_ctx();
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"}"), "missing_exp");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":\"never\"}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":\"1800000000\"}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":null}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":true}"), "bad_claims");
    ASSERT_EQ(hub_auth_reason_code(verify(a, hs256("{\"sub\":\"u\"}"), NULL)), 2003);
    hub_auth_free(a);
    /* require_exp false: no exp is fine (never expires), a bad one is not */
    a = ctx_of("  secret_key: " SECRET "\n  require_exp: false\n");
    hub_identity_t *id = NULL;
    ASSERT_EQ(verify(a, hs256("{\"sub\":\"u\"}"), &id), HUB_AUTH_OK);
    ASSERT_EQ(id->exp, 0);
    ASSERT_EQ(id->expires_ms, 0);
    ASSERT_EQ(hub_identity_expired(id, UINT64_MAX), 0);
    hub_identity_free(id);
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"exp\":\"never\"}"), "bad_claims");
    hub_auth_free(a);
}

TEST(j6_nbf_in_the_future)
{
    hub_auth_t *a = hs_ctx();
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"nbf\":1700000100}"), "not_yet_valid");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"nbf\":1700000031}"), "not_yet_valid");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"nbf\":1700000020}"), "ok"); /* leeway */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"nbf\":1699990000}"), "ok");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"nbf\":\"soon\"}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"iat\":\"today\"}"), "bad_claims");
    hub_auth_free(a);
}

TEST(j7_issuer_and_audience)
{
    hub_auth_t *a = ctx_of("  secret_key: " SECRET "\n  issuer: https://id.example\n"
                           "  audience: gohub\n");
    ASSERT(a != NULL);
    const char *base = "\"sub\":\"u\"," EXP_OK;
    char p[512];
#define WITH(extra) (snprintf(p, sizeof(p), "{%s,%s}", base, extra), hs256(p))
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":\"gohub\""), "ok");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":[\"x\",\"gohub\"]"), "ok");
    ASSERT_REASON(a, WITH("\"iss\":\"https://evil.example\",\"aud\":\"gohub\""), "bad_issuer");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example/\",\"aud\":\"gohub\""), "bad_issuer");
    ASSERT_REASON(a, WITH("\"aud\":\"gohub\""), "bad_issuer");
    ASSERT_REASON(a, WITH("\"iss\":[\"https://id.example\"],\"aud\":\"gohub\""), "bad_issuer");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":\"other\""), "bad_audience");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":[\"a\",\"b\"]"), "bad_audience");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":[]"), "bad_audience");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":\"GOHUB\""), "bad_audience");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\""), "bad_audience");
    ASSERT_REASON(a, WITH("\"iss\":\"https://id.example\",\"aud\":[1,\"gohubx\"]"), "bad_audience");
#undef WITH
    hub_auth_free(a);
    /* unchecked when not configured */
    a = hs_ctx();
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK ",\"iss\":\"any\",\"aud\":5}"), "ok");
    hub_auth_free(a);
}

/* ---- J8, J9 -------------------------------------------------------------------- */

TEST(j8_hs_rs_confusion)
{
    char lines[512];
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n  algorithms: [RS256]\n", rsa_pub);
    hub_auth_t *a = ctx_of(lines);
    ASSERT(a != NULL);
    const char *p = "{\"sub\":\"mallory\"," EXP_OK "}";
    /* HS256 with the server's public PEM as the HMAC key: libjwt alone
     * accepts this when verifying with the PEM */
    char *forged = hand_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", p, rsa_pub_pem, 256);
    jwt_t *j = NULL;
    ASSERT_EQ(jwt_decode(&j, forged, (const unsigned char *)rsa_pub_pem, (int)strlen(rsa_pub_pem)),
              0);
    jwt_free(j);
    ASSERT_REASON(a, forged, "bad_alg");
    hub_auth_free(a);
    /* both slots configured and both algorithms allowed: an HS token is
     * checked with the secret only, never with the PEM */
    snprintf(lines, sizeof(lines),
             "  secret_key: " SECRET "\n  public_key_file: %s\n  algorithms: [HS256, RS256]\n",
             rsa_pub);
    a = ctx_of(lines);
    ASSERT(a != NULL);
    ASSERT_REASON(a, forged, "bad_signature");
    ASSERT_REASON(a, hs256(p), "ok");
    char *rs = lib_token(JWT_ALG_RS256, rsa_priv_pem, p);
    ASSERT_REASON(a, rs, "ok");
    free(rs);
    hub_auth_free(a);
}

TEST(j9_rs256_valid_and_tampered)
{
    char lines[512];
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n", rsa_pub); /* default algorithms */
    hub_auth_t *a = ctx_of(lines);
    ASSERT(a != NULL);
    char *tok = lib_token(JWT_ALG_RS256, rsa_priv_pem,
                          "{\"sub\":\"rs-user\",\"permissions\":[\"broadcast\"]," EXP_OK "}");
    ASSERT(tok != NULL);
    hub_identity_t *id = NULL;
    ASSERT_EQ(verify(a, tok, &id), HUB_AUTH_OK);
    ASSERT_STREQ(id->user_id, "rs-user");
    ASSERT_STREQ(id->permissions[0], "broadcast");
    hub_identity_free(id);
    /* tampered payload, same signature */
    char *other = lib_token(JWT_ALG_RS256, rsa_priv_pem, "{\"sub\":\"admin\"," EXP_OK "}");
    char forged[4096];
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char *o1 = strchr(other, '.'), *o2 = strrchr(other, '.');
    snprintf(forged, sizeof(forged), "%.*s.%.*s%s", (int)(d1 - tok), tok, (int)(o2 - o1 - 1),
             o1 + 1, d2);
    ASSERT_REASON(a, forged, "bad_signature");
    /* one flipped signature character */
    snprintf(forged, sizeof(forged), "%s", tok);
    char *last = forged + strlen(forged) - 5;
    *last = *last == 'A' ? 'B' : 'A';
    ASSERT_REASON(a, forged, "bad_signature");
    /* no secret configured: no HS algorithm is usable */
    ASSERT_REASON(a, hs256("{\"sub\":\"u\"," EXP_OK "}"), "bad_alg");
    free(tok);
    free(other);
    hub_auth_free(a);
}

TEST(es256_with_an_ec_key)
{
    char lines[512];
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n", ec_pub);
    hub_auth_t *a = ctx_of(lines);
    ASSERT(a != NULL);
    char *tok = lib_token(JWT_ALG_ES256, ec_priv_pem, "{\"sub\":\"ec-user\"," EXP_OK "}");
    ASSERT_REASON(a, tok, "ok");
    /* an RS256 token against an EC key: the key cannot be RSA, refused
     * before libjwt sees it */
    char *rs = lib_token(JWT_ALG_RS256, rsa_priv_pem, "{\"sub\":\"u\"," EXP_OK "}");
    ASSERT_REASON(a, rs, "bad_alg");
    free(tok);
    free(rs);
    hub_auth_free(a);
}

/* ---- J10 and other malformed tokens ---------------------------------------------- */

TEST(j10_malformed_tokens)
{
    hub_auth_t *a = hs_ctx();
    const char *p = "{\"sub\":\"u\"," EXP_OK "}";
    char good[4096], t[8192];
    snprintf(good, sizeof(good), "%s", hs256(p));
    char *d2 = strrchr(good, '.');
    /* two parts, four parts, one part */
    snprintf(t, sizeof(t), "%.*s", (int)(d2 - good), good);
    ASSERT_REASON(a, t, "malformed");
    snprintf(t, sizeof(t), "%s.abc", good);
    ASSERT_REASON(a, t, "malformed");
    ASSERT_REASON(a, "abcdef", "malformed");
    ASSERT_REASON(a, "..", "malformed");
    ASSERT_REASON(a, ".x.y", "malformed");
    /* bad base64: a character outside base64url, padding, a non-canonical
     * last character, an impossible length */
    snprintf(t, sizeof(t), "%s", good);
    t[3] = '+';
    ASSERT_REASON(a, t, "malformed");
    snprintf(t, sizeof(t), "%s", good);
    t[5] = '*';
    ASSERT_REASON(a, t, "malformed");
    snprintf(t, sizeof(t), "%s=", good);
    ASSERT_REASON(a, t, "malformed");
    ASSERT_REASON(a, "eyJhbGciOiJIUzI1NiJ9x.e30.", "malformed");
    /* "{}" is e30; e31 has stray low bits */
    ASSERT_REASON(a, "eyJhbGciOiJIUzI1NiJ9.e31.abc", "malformed");
    /* header: not JSON, not an object, with a NUL, trailing bytes */
    ASSERT_REASON(a, hand_token("not json", p, SECRET, 256), "malformed");
    ASSERT_REASON(a, hand_token("[\"HS256\"]", p, SECRET, 256), "malformed");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\"} x", p, SECRET, 256), "malformed");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"x\":\"\\u0000\"}", p, SECRET, 256),
                  "malformed");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"alg\":\"none\"}", p, SECRET, 256),
                  "malformed");
    /* typ, kid with a path, crit */
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", p, SECRET, 256), "ok");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"typ\":\"JOSE+x\"}", p, SECRET, 256),
                  "malformed");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"kid\":\"k1\"}", p, SECRET, 256), "ok");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"kid\":\"../../etc/passwd\"}", p, SECRET, 256),
                  "malformed");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"kid\":\"..\\\\x\"}", p, SECRET, 256),
                  "malformed");
    ASSERT_REASON(a, hand_token("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", p, SECRET,
                                256),
                  "malformed");
    /* payload: not JSON, an array, duplicate claims, invalid UTF-8 */
    ASSERT_REASON(a, hs256("not json"), "malformed");
    ASSERT_REASON(a, hs256("[1,2]"), "malformed");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"sub\":\"admin\"," EXP_OK "}"), "malformed");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\xff\"," EXP_OK "}"), "malformed");
    ASSERT_REASON(a, hs256("{\"sub\":\"\xed\xa0\x80\"," EXP_OK "}"), "malformed"); /* surrogate */
    ASSERT_REASON(a, hs256("{\"sub\":\"caf\xc3\xa9\"," EXP_OK "}"), "ok");
    ASSERT_REASON(a, hs256("{\"sub\":\"admin\x01x\"," EXP_OK "}"), "malformed"); /* raw control */
    ASSERT_REASON(a, hs256("{\n\t\"sub\":\"u\",\r\n" EXP_OK "}"), "ok");
    /* a NUL byte inside the token text */
    size_t n = strlen(good);
    good[10] = '\0';
    hub_identity_t *id = NULL;
    ASSERT_EQ(hub_auth_verify(a, good, n, NOW_MS, &id), HUB_AUTH_MALFORMED);
    ASSERT(id == NULL);
    /* empty */
    ASSERT_EQ(hub_auth_verify(a, "", 0, NOW_MS, &id), HUB_AUTH_NO_TOKEN);
    ASSERT_EQ(hub_auth_verify(a, NULL, 0, NOW_MS, &id), HUB_AUTH_NO_TOKEN);
    hub_auth_free(a);
}

TEST(j10_length_cap_first)
{
    hub_auth_t *a = hs_ctx(); /* max_token_bytes 4 KiB */
    static char big[64 * 1024 + 2];
    memset(big, 'A', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    hub_identity_t *id = NULL;
    ASSERT_EQ(hub_auth_verify(a, big, 64 * 1024, NOW_MS, &id), HUB_AUTH_TOO_LONG);
    ASSERT_EQ(hub_auth_verify(a, big, 4097, NOW_MS, &id), HUB_AUTH_TOO_LONG);
    ASSERT(id == NULL);
    /* a real token padded past the cap with a long claim */
    char payload[6000];
    int k = snprintf(payload, sizeof(payload), "{\"sub\":\"u\"," EXP_OK ",\"pad\":\"");
    memset(payload + k, 'x', 4000);
    snprintf(payload + k + 4000, sizeof(payload) - (size_t)k - 4000, "\"}");
    ASSERT_REASON(a, hs256(payload), "too_long");
    hub_auth_free(a);
    /* the cap at its maximum (64 KiB): a 64 KiB token is parsed, no crash */
    a = ctx_of("  secret_key: " SECRET "\n  max_token_bytes: 64KiB\n");
    ASSERT(a != NULL);
    memcpy(big, "eyJhbGciOiJIUzI1NiJ9.", 21);
    big[64 * 1024 - 3] = '.';
    ASSERT_EQ(hub_auth_verify(a, big, 64 * 1024, NOW_MS, &id), HUB_AUTH_MALFORMED);
    ASSERT_EQ(hub_auth_verify(a, big, 64 * 1024 + 1, NOW_MS, &id), HUB_AUTH_TOO_LONG);
    hub_auth_free(a);
}

TEST(bad_claims)
{
    hub_auth_t *a = hs_ctx();
    ASSERT_REASON(a, hs256("{" EXP_OK "}"), "bad_claims");                       /* no user */
    ASSERT_REASON(a, hs256("{\"sub\":\"\"," EXP_OK "}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"user_id\":42," EXP_OK "}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":7," EXP_OK "}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"username\":[1]," EXP_OK "}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"permissions\":\"admin:system\"," EXP_OK "}"),
                  "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"u\",\"permissions\":[\"a\",1]," EXP_OK "}"), "bad_claims");
    ASSERT_REASON(a, hs256("{\"sub\":\"anon-gohub-1-1\"," EXP_OK "}"), "bad_claims"); /* reserved */
    ASSERT_REASON(a, hs256("{\"sub\":\"a\\nb\"," EXP_OK "}"), "bad_claims");
    char p[512], uid[HUB_AUTH_USER_ID_MAX + 2];
    memset(uid, 'u', sizeof(uid) - 1);
    uid[sizeof(uid) - 1] = '\0';
    snprintf(p, sizeof(p), "{\"sub\":\"%s\"," EXP_OK "}", uid);
    ASSERT_REASON(a, hs256(p), "bad_claims");
    uid[HUB_AUTH_USER_ID_MAX] = '\0';
    snprintf(p, sizeof(p), "{\"sub\":\"%s\"," EXP_OK "}", uid);
    ASSERT_REASON(a, hs256(p), "ok");
    hub_auth_free(a);
}

/* ---- building a context ------------------------------------------------------------ */

TEST(context_build_errors)
{
    char lines[512], err[512];
    /* auth disabled: no context, no error */
    hub_config_t *cfg = config_of("auth:\n  enabled: false\n");
    hub_auth_t *a = (hub_auth_t *)1;
    ASSERT_EQ(hub_auth_new(cfg, &a, err, sizeof(err)), 0);
    ASSERT(a == NULL);
    hub_config_free(cfg);
    snprintf(lines, sizeof(lines), "  public_key_file: %s/missing.pem\n", keydir);
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), HUB_ECONFIG);
    ASSERT(strstr(err, "auth.public_key_file: cannot open") != NULL);
    ASSERT(strstr(err, "missing.pem") != NULL);
    snprintf(lines, sizeof(lines), "  public_key_file: %s/garbage.pem\n", keydir);
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), HUB_ECONFIG);
    ASSERT(strstr(err, "not a PEM public key") != NULL);
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n", rsa_priv);
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), HUB_ECONFIG);
    ASSERT(strstr(err, "private key") != NULL);
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n", keydir); /* a directory */
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), HUB_ECONFIG);
    /* keys no allowed algorithm can use */
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n  algorithms: [ES256]\n", rsa_pub);
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), HUB_ECONFIG);
    ASSERT(strstr(err, "cannot verify") != NULL);
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n", ec384_pub); /* defaults: RS256, ES256 */
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), HUB_ECONFIG);
    snprintf(lines, sizeof(lines), "  public_key_file: %s\n  algorithms: [ES384]\n", ec384_pub);
    ASSERT_EQ(ctx_error(lines, err, sizeof(err)), 0);
    ASSERT_EQ(ctx_error("  secret_key: " SECRET "\n", err, sizeof(err)), 0);
}

TEST(reason_names_are_stable)
{
    /* metrics labels: renaming one breaks dashboards */
    static const char *const want[] = { "ok", "no_token", "too_long", "malformed", "bad_alg",
                                        "bad_signature", "expired", "not_yet_valid",
                                        "missing_exp", "bad_issuer", "bad_audience",
                                        "bad_claims", "internal" };
    ASSERT_EQ(HUB_ARRAY_LEN(want), HUB_AUTH_NREASONS);
    for (int i = 0; i < HUB_AUTH_NREASONS; i++) {
        ASSERT_STREQ(hub_auth_reason_name((hub_auth_reason_t)i), want[i]);
        ASSERT(hub_auth_reason_text((hub_auth_reason_t)i)[0] != '\0');
        ASSERT_EQ(hub_auth_reason_code((hub_auth_reason_t)i),
                  i == HUB_AUTH_OK ? 0 : (i == HUB_AUTH_EXPIRED ? 2002 : 2003));
    }
    ASSERT_STREQ(hub_auth_reason_name(HUB_AUTH_NREASONS), "unknown");
}

/* ---- gohub token ----------------------------------------------------------------------- */

TEST(mint_round_trip)
{
    hub_config_t *cfg = config_of("auth:\n  enabled: true\n  secret_key: " SECRET "\n"
                                  "  issuer: iss-x\n  audience: aud-y\n");
    ASSERT(cfg != NULL);
    char err[256];
    hub_auth_t *a = NULL;
    ASSERT_EQ(hub_auth_new(cfg, &a, err, sizeof(err)), 0);
    const char *perms[] = { "join:room", "send:message" };
    hub_token_req_t req = { "alice", "Alice", perms, 2, 3600 * 1000ULL };
    char *tok = hub_auth_mint(cfg, &req, NOW_MS, err, sizeof(err));
    ASSERT(tok != NULL);
    hub_identity_t *id = NULL;
    ASSERT_EQ(hub_auth_verify(a, tok, strlen(tok), NOW_MS, &id), HUB_AUTH_OK);
    ASSERT_STREQ(id->user_id, "alice");
    ASSERT_STREQ(id->username, "Alice");
    ASSERT_EQ(id->npermissions, 2);
    ASSERT_STREQ(id->permissions[1], "send:message");
    ASSERT_EQ(id->exp, NOW_S + 3600);
    ASSERT(strstr(id->claims_json, "\"iss\":\"iss-x\"") != NULL);
    ASSERT(strstr(id->claims_json, "\"aud\":\"aud-y\"") != NULL);
    hub_identity_free(id);
    /* expired an hour and a minute later */
    ASSERT_EQ(hub_auth_verify(a, tok, strlen(tok), NOW_MS + 3660 * 1000ULL, &id),
              HUB_AUTH_EXPIRED);
    free(tok);
    /* no permissions claim when none are given */
    hub_token_req_t bare = { "bob", NULL, NULL, 0, 60000 };
    tok = hub_auth_mint(cfg, &bare, NOW_MS, err, sizeof(err));
    ASSERT_EQ(hub_auth_verify(a, tok, strlen(tok), NOW_MS, &id), HUB_AUTH_OK);
    ASSERT(id->permissions == NULL);
    ASSERT(strstr(id->claims_json, "permissions") == NULL);
    hub_identity_free(id);
    free(tok);
    /* reserved and empty user ids are refused */
    hub_token_req_t anon = { "anon-x", NULL, NULL, 0, 60000 };
    ASSERT(hub_auth_mint(cfg, &anon, NOW_MS, err, sizeof(err)) == NULL);
    hub_token_req_t none = { "", NULL, NULL, 0, 60000 };
    ASSERT(hub_auth_mint(cfg, &none, NOW_MS, err, sizeof(err)) == NULL);
    hub_auth_free(a);
    hub_config_free(cfg);
}

TEST(mint_uses_the_first_hs_algorithm)
{
    char yaml[512], err[256];
    snprintf(yaml, sizeof(yaml),
             "auth:\n  enabled: true\n  secret_key: " SECRET "\n  public_key_file: %s\n"
             "  algorithms: [RS256, HS512, HS256]\n",
             rsa_pub);
    hub_config_t *cfg = config_of(yaml);
    ASSERT(cfg != NULL);
    hub_token_req_t req = { "carol", NULL, NULL, 0, 60000 };
    char *tok = hub_auth_mint(cfg, &req, NOW_MS, err, sizeof(err));
    ASSERT(tok != NULL);
    ASSERT(strncmp(tok, "eyJhbGciOiJIUzUxMiIs", 20) == 0); /* {"alg":"HS512", */
    hub_auth_t *a = NULL;
    ASSERT_EQ(hub_auth_new(cfg, &a, err, sizeof(err)), 0);
    hub_identity_t *id = NULL;
    ASSERT_EQ(hub_auth_verify(a, tok, strlen(tok), NOW_MS, &id), HUB_AUTH_OK);
    hub_identity_free(id);
    hub_auth_free(a);
    free(tok);
    hub_config_free(cfg);
}

TEST(mint_errors)
{
    char yaml[512], err[256];
    hub_token_req_t req = { "dave", NULL, NULL, 0, 60000 };
    hub_config_t *cfg = config_of("auth:\n  enabled: false\n");
    ASSERT(hub_auth_mint(cfg, &req, NOW_MS, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "no auth.secret_key") != NULL);
    hub_config_free(cfg);
    snprintf(yaml, sizeof(yaml),
             "auth:\n  enabled: true\n  secret_key: " SECRET "\n  public_key_file: %s\n"
             "  algorithms: [RS256]\n",
             rsa_pub);
    cfg = config_of(yaml);
    ASSERT(cfg != NULL);
    ASSERT(hub_auth_mint(cfg, &req, NOW_MS, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "no HS algorithm") != NULL);
    hub_config_free(cfg);
}

int main(void)
{
    static const char *const env[] = { "CENTRIFUGO_TOKEN_HMAC_SECRET_KEY",
                                       "GOHUB_AUTH_ENABLED",  "GOHUB_AUTH_SECRET_KEY",
                                       "GOHUB_AUTH_PUBLIC_KEY_FILE", "GOHUB_AUTH_ALGORITHMS",
                                       "GOHUB_AUTH_LEEWAY",   "GOHUB_AUTH_REQUIRE_EXP",
                                       "GOHUB_AUTH_ISSUER",   "GOHUB_AUTH_AUDIENCE",
                                       "GOHUB_AUTH_MAX_TOKEN_BYTES" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(env); i++)
        unsetenv(env[i]);
    if (make_keys() != 0) {
        printf("cannot generate keys with openssl in /tmp\n");
        drop_keys();
        return 1;
    }
    RUN(j1_valid_hs256_and_identity);
    RUN(sub_is_the_user_id_without_user_id);
    RUN(hs384_and_hs512_when_allowed);
    RUN(j2_wrong_signature);
    RUN(j3_alg_none_rejected);
    RUN(j4_expired_with_leeway);
    RUN(j5_missing_or_non_numeric_exp);
    RUN(j6_nbf_in_the_future);
    RUN(j7_issuer_and_audience);
    RUN(j8_hs_rs_confusion);
    RUN(j9_rs256_valid_and_tampered);
    RUN(es256_with_an_ec_key);
    RUN(j10_malformed_tokens);
    RUN(j10_length_cap_first);
    RUN(bad_claims);
    RUN(context_build_errors);
    RUN(reason_names_are_stable);
    RUN(mint_round_trip);
    RUN(mint_uses_the_first_hs_algorithm);
    RUN(mint_errors);
    drop_keys();
    HARNESS_MAIN_END();
}
