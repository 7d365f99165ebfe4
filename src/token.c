/* token.c: `gohub token --user ID [--username U] [--perm P]... [--ttl 1h]
 * [-c FILE]`: loads the configuration as the daemon would (file, then
 * GOHUB_* variables) and prints a token hub_auth_mint signed with
 * auth.secret_key. Main thread. */
#include "token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "common.h"
#include "config.h"
#include "msg.h"

#define MAX_PERMS 256

static void usage(FILE *out)
{
    fputs("usage: gohub token --user ID [--username NAME] [--perm PERMISSION]...\n"
          "                   [--ttl DURATION] [-c FILE]\n"
          "\n"
          "Prints a JWT for user ID signed with auth.secret_key (HS256, or the first\n"
          "HS algorithm of auth.algorithms), with the claims sub and user_id (ID),\n"
          "username, permissions, iat, exp, and iss / aud when auth.issuer /\n"
          "auth.audience are set.\n"
          "\n"
          "  --user ID           the user id (required)\n"
          "  --username NAME     a display name\n"
          "  --perm PERMISSION   a permission (repeat, or separate with commas);\n"
          "                      none: the token has no permissions claim and holds\n"
          "                      auth.anonymous_permissions\n"
          "  --ttl DURATION      lifetime: 90s, 15m, 1h (default), 7d; 0 = no exp claim\n"
          "  -c FILE             configuration file (GOHUB_* variables apply as well)\n",
          out);
}

int hub_token_parse_ttl(const char *s, uint64_t *ms)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = { { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
                  { "d", 86400000 } };
    if (*end == '\0' && v == 0) {
        *ms = 0;
        return 0;
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(units); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].ms / 1000) /* keeps now + ttl in range */
                return -1;
            *ms = v * units[i].ms;
            return 0;
        }
    }
    return -1;
}

/* The value of option a at argv[*i]: "--opt=value" or "--opt value". */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=')
        return a + n + 1;
    if (strcmp(a, name) == 0 && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static int is_opt(const char *a, const char *name)
{
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

int hub_token_main(int argc, char **argv)
{
    const char *path = NULL, *ttl_text = "1h";
    hub_token_req_t req = { NULL, NULL, NULL, 0, 0 };
    char *copies[MAX_PERMS]; /* owned: each --perm value, split in place */
    const char *perms[MAX_PERMS];
    size_t np = 0, ncopies = 0;
    int code = 2, have_perms = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            code = 0;
            goto out;
        } else if (is_opt(a, "--user")) {
            req.user_id = v = opt_value(argc, argv, &i, "--user");
        } else if (is_opt(a, "--username")) {
            req.username = v = opt_value(argc, argv, &i, "--username");
        } else if (is_opt(a, "--ttl")) {
            ttl_text = v = opt_value(argc, argv, &i, "--ttl");
        } else if (is_opt(a, "-c")) {
            path = v = opt_value(argc, argv, &i, "-c");
        } else if (is_opt(a, "--config")) {
            path = v = opt_value(argc, argv, &i, "--config");
        } else if (is_opt(a, "--perm")) {
            have_perms = 1;
            v = opt_value(argc, argv, &i, "--perm");
            if (v == NULL)
                goto no_value;
            if (ncopies == MAX_PERMS || (copies[ncopies] = strdup(v)) == NULL) {
                fprintf(stderr, "gohub token: too many --perm\n");
                goto out;
            }
            char *save = NULL;
            for (char *p = strtok_r(copies[ncopies++], ",", &save); p != NULL;
                 p = strtok_r(NULL, ",", &save)) {
                if (np == MAX_PERMS) {
                    fprintf(stderr, "gohub token: at most %d permissions\n", MAX_PERMS);
                    goto out;
                }
                perms[np++] = p;
            }
        } else {
            fprintf(stderr, "gohub token: unknown argument '%s'\n", a);
            usage(stderr);
            goto out;
        }
        if (v == NULL) {
        no_value:
            fprintf(stderr, "gohub token: %s needs a value\n", a);
            goto out;
        }
    }
    if (req.user_id == NULL) {
        fprintf(stderr, "gohub token: --user ID is required\n");
        usage(stderr);
        goto out;
    }
    if (hub_token_parse_ttl(ttl_text, &req.ttl_ms) != 0) {
        fprintf(stderr, "gohub token: --ttl '%s': expected a duration such as 90s, 15m, 1h, "
                        "7d, or 0 for no expiry\n", ttl_text);
        goto out;
    }
    req.permissions = have_perms ? perms : NULL;
    req.npermissions = np;

    code = 1;
    char err[512];
    hub_config_t *cfg = hub_config_load(path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "gohub token: configuration error: %s\n", err);
        goto out;
    }
    if (req.ttl_ms == 0 && cfg->auth_require_exp)
        fprintf(stderr, "gohub token: warning: --ttl 0 makes a token without exp, which this "
                        "configuration refuses (auth.require_exp)\n");
    if (!cfg->auth_enabled)
        fprintf(stderr, "gohub token: warning: auth.enabled is false in this configuration: "
                        "the daemon ignores tokens\n");
    char *tok = hub_auth_mint(cfg, &req, hub_now_ms(), err, sizeof(err));
    hub_config_free(cfg);
    if (tok == NULL) {
        fprintf(stderr, "gohub token: %s\n", err);
        goto out;
    }
    printf("%s\n", tok);
    free(tok);
    code = 0;
out:
    for (size_t i = 0; i < ncopies; i++)
        free(copies[i]);
    return code;
}
