/* utf8_test.c: hub_utf8_valid and hub_utf8_seq against the edges of
 * RFC 3629 (overlong forms, surrogates, past U+10FFFF, truncation) and the
 * 8-byte ASCII stride (a bad byte at every offset of a run); the
 * well-formed prefix; clean copies (U+FFFD, no character cut). */
#include <string.h>

#include "harness.h"
#include "utf8.h"

static int valid(const char *s)
{
    return hub_utf8_valid((const unsigned char *)s, strlen(s));
}

TEST(accepts_well_formed)
{
    ASSERT_EQ(valid(""), 1);
    ASSERT_EQ(valid("plain ascii, longer than one 8-byte word"), 1);
    ASSERT_EQ(valid("\xC2\x80 \xDF\xBF"), 1);                 /* U+0080, U+07FF */
    ASSERT_EQ(valid("\xE0\xA0\x80 \xED\x9F\xBF \xEE\x80\x80"), 1); /* U+0800, U+D7FF, U+E000 */
    ASSERT_EQ(valid("\xEF\xBF\xBF"), 1);                      /* U+FFFF */
    ASSERT_EQ(valid("\xF0\x90\x80\x80 \xF4\x8F\xBF\xBF"), 1); /* U+10000, U+10FFFF */
    ASSERT_EQ(valid("h\xC3\xA9llo w\xC3\xB6rld \xF0\x9F\x98\x80!"), 1);
}

TEST(rejects_overlong_forms)
{
    ASSERT_EQ(valid("\xC0\x80"), 0);
    ASSERT_EQ(valid("\xC1\xBF"), 0);
    ASSERT_EQ(valid("\xE0\x80\x80"), 0);
    ASSERT_EQ(valid("\xE0\x9F\xBF"), 0);
    ASSERT_EQ(valid("\xF0\x80\x80\x80"), 0);
    ASSERT_EQ(valid("\xF0\x8F\xBF\xBF"), 0);
}

TEST(rejects_surrogates_and_past_max)
{
    ASSERT_EQ(valid("\xED\xA0\x80"), 0); /* U+D800 */
    ASSERT_EQ(valid("\xED\xBF\xBF"), 0); /* U+DFFF */
    ASSERT_EQ(valid("\xF4\x90\x80\x80"), 0); /* U+110000 */
    ASSERT_EQ(valid("\xF5\x80\x80\x80"), 0);
    ASSERT_EQ(valid("\xFF"), 0);
}

TEST(rejects_bad_continuations_and_truncation)
{
    ASSERT_EQ(valid("\x80"), 0);
    ASSERT_EQ(valid("a\xBF"), 0);
    ASSERT_EQ(valid("\xC3"), 0);
    ASSERT_EQ(valid("\xC3("), 0);
    ASSERT_EQ(valid("\xE2\x82"), 0);
    ASSERT_EQ(valid("\xE2(\xAC"), 0);
    ASSERT_EQ(valid("\xF0\x9F\x98"), 0);
    ASSERT_EQ(valid("\xF0\x9F\x98("), 0);
    /* a length is a span: a sequence cut by n is truncated */
    ASSERT_EQ(hub_utf8_valid((const unsigned char *)"\xC3\xA9", 1), 0);
    ASSERT_EQ(hub_utf8_seq((const unsigned char *)"\xE2\x82\xAC", (const unsigned char *)"\xE2\x82\xAC" + 2), 0);
    ASSERT_EQ(hub_utf8_seq((const unsigned char *)"\xE2\x82\xAC", (const unsigned char *)"\xE2\x82\xAC" + 3), 3);
}

TEST(bad_byte_at_every_offset_of_a_run)
{
    char buf[40];
    for (size_t at = 0; at < 24; at++) {
        memset(buf, 'a', sizeof(buf));
        buf[at] = (char)0x80;
        ASSERT_EQ(hub_utf8_valid((const unsigned char *)buf, 24), 0);
        ASSERT_EQ(hub_utf8_valid((const unsigned char *)buf, at), 1);
    }
}

TEST(prefix_stops_at_the_first_bad_byte)
{
    ASSERT_EQ(hub_utf8_prefix((const unsigned char *)"abcdefghij\xff", 11), 10);
    ASSERT_EQ(hub_utf8_prefix((const unsigned char *)"\xc3\xa9\xe2\x82", 4), 2);
    ASSERT_EQ(hub_utf8_prefix((const unsigned char *)"\xed\xa0\x80", 3), 0);
    ASSERT_EQ(hub_utf8_prefix((const unsigned char *)"ok", 2), 2);
}

TEST(clean_replaces_bad_bytes_and_never_cuts_a_character)
{
    char out[16];
    size_t n = hub_utf8_clean(out, sizeof(out), "a\xff\xc3\xa9\xed\xa0", 6);
    ASSERT_EQ(n, 1 + 3 + 2 + 3 + 3);
    ASSERT_MEMEQ(out, "a\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd", n);
    /* cap 3: "a" fits, the replacement (3 bytes) would not */
    ASSERT_EQ(hub_utf8_clean(out, 3, "a\xff", 2), 1);
    /* a two-byte character that would end past cap is left out whole */
    ASSERT_EQ(hub_utf8_clean(out, 4, "abc\xc3\xa9", 5), 3);
    ASSERT_EQ(hub_utf8_clean(out, 5, "abc\xc3\xa9", 5), 5);
}

int main(void)
{
    RUN(accepts_well_formed);
    RUN(rejects_overlong_forms);
    RUN(rejects_surrogates_and_past_max);
    RUN(rejects_bad_continuations_and_truncation);
    RUN(bad_byte_at_every_offset_of_a_run);
    RUN(prefix_stops_at_the_first_bad_byte);
    RUN(clean_replaces_bad_bytes_and_never_cuts_a_character);
    HARNESS_MAIN_END();
}
