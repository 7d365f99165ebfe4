/* api_test.c: the HTTP API's access decision (hub_api_access): with a key,
 * only "Bearer <key>" or "X-API-Key: <key>" exactly; without one, loopback
 * peers only. The integration tests cover the same through real sockets
 * where the host has a non-loopback address to call from. */
#include <string.h>

#include "api.h"
#include "harness.h"

static int access_of(const char *key, const char *auth, const char *x, int loopback)
{
    return hub_api_access(key, auth, auth ? strlen(auth) : 0, x, x ? strlen(x) : 0, loopback);
}

TEST(no_key_loopback_only)
{
    ASSERT_EQ(access_of("", NULL, NULL, 1), 0);
    ASSERT_EQ(access_of(NULL, NULL, NULL, 1), 0);
    ASSERT_EQ(access_of("", NULL, NULL, 0), 403);
    /* credentials do not open the API to other hosts when no key is set */
    ASSERT_EQ(access_of("", "Bearer ", "", 0), 403);
    ASSERT_EQ(access_of("", "Bearer x", "x", 0), 403);
}

TEST(key_as_bearer_or_header)
{
    ASSERT_EQ(access_of("k3y", "Bearer k3y", NULL, 0), 0);
    ASSERT_EQ(access_of("k3y", "bearer k3y", NULL, 0), 0);
    ASSERT_EQ(access_of("k3y", "BEARER k3y", NULL, 0), 0);
    ASSERT_EQ(access_of("k3y", NULL, "k3y", 0), 0);
    ASSERT_EQ(access_of("k3y", "Bearer nope", "k3y", 0), 0);
    ASSERT_EQ(access_of("k3y", "Bearer k3y", "nope", 0), 0);
}

TEST(key_required_even_on_loopback)
{
    ASSERT_EQ(access_of("k3y", NULL, NULL, 1), 401);
    ASSERT_EQ(access_of("k3y", NULL, NULL, 0), 401);
}

TEST(wrong_keys)
{
    const char *bad_auth[] = { "Bearer", "Bearer ", "Bearer k3", "Bearer k3yy", "Bearer  k3y",
                               "k3y", "Basic k3y", "Bearerk3y", "Bearer K3Y", "Token k3y" };
    for (size_t i = 0; i < sizeof(bad_auth) / sizeof(bad_auth[0]); i++)
        if (access_of("k3y", bad_auth[i], NULL, 1) != 401)
            FAILF("Authorization %s was accepted", bad_auth[i]);
    const char *bad_x[] = { "", "k3", "k3yy", "K3Y", " k3y", "Bearer k3y" };
    for (size_t i = 0; i < sizeof(bad_x) / sizeof(bad_x[0]); i++)
        if (access_of("k3y", NULL, bad_x[i], 1) != 401)
            FAILF("X-API-Key %s was accepted", bad_x[i]);
}

TEST(lengths_are_spans_not_strings)
{
    /* header values are spans into the request buffer, not NUL-terminated */
    const char buf[] = "Bearer k3yXXXX";
    ASSERT_EQ(hub_api_access("k3y", buf, 10, NULL, 0, 0), 0);
    ASSERT_EQ(hub_api_access("k3y", buf, 11, NULL, 0, 0), 401);
    ASSERT_EQ(hub_api_access("k3y", NULL, 0, "k3yZ", 3, 0), 0);
    ASSERT_EQ(hub_api_access("k3y", NULL, 0, "k3yZ", 2, 0), 401);
}

int main(void)
{
    RUN(no_key_loopback_only);
    RUN(key_as_bearer_or_header);
    RUN(key_required_even_on_loopback);
    RUN(wrong_keys);
    RUN(lengths_are_spans_not_strings);
    HARNESS_MAIN_END();
}
