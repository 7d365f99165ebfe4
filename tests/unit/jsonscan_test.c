/* jsonscan_test.c: member spans and NUL detection on JSON source text, the
 * cases that are easy to get wrong: escaped quotes and backslashes inside
 * strings, nesting, blanks, duplicates, and "\\u0000" (an escaped backslash)
 * that is not a NUL. */
#include <string.h>

#include "harness.h"
#include "jsonscan.h"

static int member(const char *json, const char *key, const char *want)
{
    const char *v;
    size_t n;
    if (!hub_json_member(json, strlen(json), key, &v, &n))
        return want == NULL;
    return want != NULL && n == strlen(want) && memcmp(v, want, n) == 0;
}

TEST(members_of_every_type)
{
    const char *j = " { \"a\" : 1.5e3 , \"b\":\"x\",\"c\":{\"d\":[1,{\"e\":\"}\"}]},\"f\":null } ";
    ASSERT(member(j, "a", "1.5e3"));
    ASSERT(member(j, "b", "\"x\""));
    ASSERT(member(j, "c", "{\"d\":[1,{\"e\":\"}\"}]}"));
    ASSERT(member(j, "f", "null"));
    ASSERT(member(j, "d", NULL)); /* nested members are not top-level */
    ASSERT(member(j, "z", NULL));
}

TEST(escaped_quotes_and_backslashes_in_strings)
{
    ASSERT(member("{\"k\":\"a\\\"b\",\"n\":2}", "n", "2"));
    ASSERT(member("{\"k\":\"a\\\\\",\"n\":3}", "n", "3"));          /* "a\\" then n */
    ASSERT(member("{\"k\":\"\\\\\\\"\",\"n\":4}", "k", "\"\\\\\\\"\"")); /* "\\\"" */
    ASSERT(member("{\"k\\\"x\":1,\"k\":5}", "k", "5")); /* an escaped name is not k */
}

TEST(first_of_duplicate_members)
{
    ASSERT(member("{\"k\":1,\"k\":2}", "k", "1"));
}

TEST(not_an_object)
{
    ASSERT(member("[1,2]", "k", NULL));
    ASSERT(member("", "k", NULL));
    ASSERT(member("{\"k\"", "k", NULL));
}

TEST(nul_escapes)
{
    const char *yes = "{\"a\":\"x\\u0000y\"}";
    const char *escaped_backslash = "{\"a\":\"x\\\\u0000y\"}"; /* text \u0000, no NUL */
    const char *outside = "{\"a\":1}";
    ASSERT_EQ(hub_json_has_nul(yes, strlen(yes)), 1);
    ASSERT_EQ(hub_json_has_nul(escaped_backslash, strlen(escaped_backslash)), 0);
    ASSERT_EQ(hub_json_has_nul(outside, strlen(outside)), 0);
}

TEST(blank)
{
    ASSERT_EQ(hub_json_blank(" \t\r\n", 4), 1);
    ASSERT_EQ(hub_json_blank("", 0), 1);
    ASSERT_EQ(hub_json_blank(" x", 2), 0);
}

int main(void)
{
    RUN(members_of_every_type);
    RUN(escaped_quotes_and_backslashes_in_strings);
    RUN(first_of_duplicate_members);
    RUN(not_an_object);
    RUN(nul_escapes);
    RUN(blank);
    HARNESS_MAIN_END();
}
