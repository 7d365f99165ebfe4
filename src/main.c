/* main.c: command line, config loading and the hand-off to the server. Main
 * thread. Exit codes: 0 ok, 1 configuration or start-up error, 2 usage. */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "common.h"
#include "config.h"
#include "log.h"
#include "lua_vm.h"
#include "server.h"
#include "token.h"

static void usage(FILE *out)
{
    fputs("usage: gohub [-c FILE] [-t] [--version] [--help]\n"
          "       gohub token --user ID [--username NAME] [--perm P]... [--ttl 1h] [-c FILE]\n"
          "\n"
          "  -c FILE, -config FILE, --config FILE\n"
          "                     configuration file (YAML); without it the built-in\n"
          "                     defaults apply. GOHUB_<KEY> environment variables\n"
          "                     override any key (e.g. GOHUB_SERVER_ADDR=:9000).\n"
          "  -t, --test         check the configuration and the Lua code, then exit\n"
          "                     (0 ok, 1 error with the reason)\n"
          "  --config-keys      print every configuration key as a markdown table\n"
          "  --lua-api          print the functions of the gohub Lua module\n"
          "  -v, --version      print the version and exit\n"
          "  -h, --help         print this help and exit\n"
          "  token ...          print a token signed with auth.secret_key\n"
          "                     (gohub token --help)\n",
          out);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int test_only = 0;
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return hub_token_main(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "-config") == 0 || strcmp(a, "--config") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "gohub: %s needs a file\n", a);
                return 2;
            }
            path = argv[i];
        } else if (strncmp(a, "--config=", 9) == 0 || strncmp(a, "-config=", 8) == 0) {
            path = strchr(a, '=') + 1;
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--test") == 0) {
            test_only = 1;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            printf("gohub %s\n", GOHUB_VERSION);
            return 0;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--lua-api") == 0) {
            return hub_vm_dump_api(stdout) == 0 ? 0 : 1;
        } else if (strcmp(a, "--config-keys") == 0) {
            hub_config_dump_keys(stdout);
            return 0;
        } else {
            fprintf(stderr, "gohub: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }

    char err[512];
    hub_config_t *cfg = hub_config_load(path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "gohub: configuration error: %s\n", err);
        return 1;
    }
    if (test_only) {
        /* the auth key and the Lua code too: either would stop the start */
        hub_log_setup(HUB_LOG_ERROR, cfg->log_format);
        hub_auth_t *auth = NULL;
        if (hub_auth_new(cfg, &auth, err, sizeof(err)) != 0) {
            fprintf(stderr, "gohub: configuration error: %s\n", err);
            hub_config_free(cfg);
            return 1;
        }
        hub_auth_free(auth);
        if (hub_vm_check_code(cfg, err, sizeof(err)) != 0) {
            fprintf(stderr, "gohub: lua error: %s\n", err);
            hub_config_free(cfg);
            return 1;
        }
        printf("gohub: configuration %s and the Lua code in %s are valid\n",
               path ? path : "(built-in defaults)", cfg->lua_path);
        hub_config_free(cfg);
        return 0;
    }
    hub_log_setup(cfg->log_level, cfg->log_format);
    return hub_server_run(cfg, path);
}
