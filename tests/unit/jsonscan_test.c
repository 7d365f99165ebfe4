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

static int valid(const char *s)
{
    return hub_json_valid(s, strlen(s));
}

TEST(valid_accepts_strict_json)
{
    ASSERT(valid("{}"));
    ASSERT(valid(" [ ] "));
    ASSERT(valid("\t\r\n{\"a\" : [1, -0, 0.5, -12.5e+3, 1E9, true, false, null, \"\"]}\n"));
    ASSERT(valid("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\""));
    ASSERT(valid("\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf\""));
    ASSERT(valid("0"));
    ASSERT(valid("{\"k\":{\"k\":{\"k\":[[[{}]]]}}}"));
}

TEST(valid_rejects_what_cjson_lets_through)
{
    ASSERT(!valid(""));
    ASSERT(!valid("   "));
    ASSERT(!valid("01"));
    ASSERT(!valid("1."));
    ASSERT(!valid("-"));
    ASSERT(!valid("+1"));
    ASSERT(!valid(".5"));
    ASSERT(!valid("1e"));
    ASSERT(!valid("1e+"));
    ASSERT(!valid("{\"a\":1}x"));          /* trailing garbage */
    ASSERT(!valid("{\"a\":1}{}"));
    ASSERT(!valid("{\"a\":1,}"));          /* trailing comma */
    ASSERT(!valid("[1,]"));
    ASSERT(!valid("[1 2]"));
    ASSERT(!valid("{\"a\" 1}"));
    ASSERT(!valid("{a:1}"));
    ASSERT(!valid("{\"a\":1\x01}"));       /* cJSON skips any byte <= 32 as a blank */
    ASSERT(!valid("\x0b" "1"));
    ASSERT(!valid("\"a\x01" "b\""));           /* raw control byte in a string */
    ASSERT(!valid("\"a\nb\""));
    ASSERT(!valid("\"\\x\""));             /* unknown escape */
    ASSERT(!valid("\"\\u12G4\""));
    ASSERT(!valid("\"\\u12\""));
    ASSERT(!valid("\"abc"));
    ASSERT(!valid("tru"));
    ASSERT(!valid("nul"));
    ASSERT(!valid("True"));
    ASSERT(!valid("[1]]"));
    ASSERT(!valid("[[1]"));
    ASSERT(!valid("\"\\"));
}

TEST(valid_rejects_bad_utf8)
{
    ASSERT(!valid("\"\xff\""));             /* never valid */
    ASSERT(!valid("\"\xc0\xaf\""));         /* overlong / */
    ASSERT(!valid("\"\xe0\x80\xaf\""));     /* overlong, 3 bytes */
    ASSERT(!valid("\"\xed\xa0\x80\""));     /* UTF-16 surrogate */
    ASSERT(!valid("\"\xf4\x90\x80\x80\"")); /* > U+10FFFF */
    ASSERT(!valid("\"\xc3\""));             /* cut short */
    ASSERT(!valid("\"\xe2\x82\""));
    ASSERT(!valid("\"\x80\""));             /* a lone continuation byte */
    ASSERT(!valid("\"\xe2\x28\xa1\""));
    ASSERT(!valid("\xc3\xa9"));              /* non-ASCII outside a string */
}

TEST(valid_depth_limit)
{
    char deep[2 * HUB_JSON_MAX_DEPTH + 3];
    size_t n = 0;
    for (int i = 0; i < HUB_JSON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < HUB_JSON_MAX_DEPTH; i++)
        deep[n++] = ']';
    ASSERT_EQ(hub_json_valid(deep, n), 1);
    memmove(deep + 1, deep, n);
    deep[0] = '[';
    deep[n + 1] = ']';
    ASSERT_EQ(hub_json_valid(deep, n + 2), 0);
    /* an unclosed deep prefix is refused without running off the stack */
    static char huge[1 << 20];
    memset(huge, '[', sizeof(huge));
    ASSERT_EQ(hub_json_valid(huge, sizeof(huge)), 0);
}

TEST(valid_never_reads_past_n)
{
    /* the text continues in memory, but n cuts it: each prefix is judged
     * on its own bytes */
    const char *s = "{\"a\":\"b\"}";
    for (size_t i = 0; i < strlen(s); i++)
        ASSERT_EQ(hub_json_valid(s, i), 0);
    ASSERT_EQ(hub_json_valid("12345", 3), 1);
    ASSERT_EQ(hub_json_valid("truex", 4), 1);
}

int main(void)
{
    RUN(members_of_every_type);
    RUN(escaped_quotes_and_backslashes_in_strings);
    RUN(first_of_duplicate_members);
    RUN(not_an_object);
    RUN(nul_escapes);
    RUN(blank);
    RUN(valid_accepts_strict_json);
    RUN(valid_rejects_what_cjson_lets_through);
    RUN(valid_rejects_bad_utf8);
    RUN(valid_depth_limit);
    RUN(valid_never_reads_past_n);
    HARNESS_MAIN_END();
}
