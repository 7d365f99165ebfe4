/* log_test.c: the field format. Each test logs one line into a pipe that
 * stands in for stderr and compares the fields written (the timestamp is
 * cut off). A value may mix text and conversions ("addr=%s:%d"), and every
 * conversion takes its own argument: a format the logger did not expect
 * once read a string from an int and crashed the daemon's error path. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"

static int pipe_fd[2] = { -1, -1 };
static char got[4096];

/* The line last logged, from its first field (after the message). */
static const char *fields(void)
{
    ssize_t n = read(pipe_fd[0], got, sizeof(got) - 1);
    got[n > 0 ? n : 0] = '\0';
    char *msg = strstr(got, "\"msg\":\"m\"");
    if (msg == NULL)
        msg = strstr(got, " m");
    if (msg == NULL)
        return got;
    return msg + (got[0] == '{' ? strlen("\"msg\":\"m\"") : 2);
}

TEST(one_conversion_per_value)
{
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_JSON);
    hub_log(HUB_LOG_INFO, "m", "a=%s b=%d c=%llu d=%zu e=%x", "x y", -3, 18446744073709551615ull,
            (size_t)7, 255u);
    ASSERT_STREQ(fields(), ",\"a\":\"x y\",\"b\":-3,\"c\":18446744073709551615,\"d\":7,"
                           "\"e\":\"ff\"}\n");
}

TEST(text_and_conversions_mixed_in_one_value)
{
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_JSON);
    hub_log(HUB_LOG_ERROR, "m", "addr=%s:%d file=%s/%s limit=%u/s reason=%s", "127.0.0.1", 8080,
            "dir", "f.lua", 5u, "in use");
    ASSERT_STREQ(fields(), ",\"addr\":\"127.0.0.1:8080\",\"file\":\"dir/f.lua\","
                           "\"limit\":\"5/s\",\"reason\":\"in use\"}\n");
}

TEST(doubles_with_and_without_precision)
{
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_JSON);
    hub_log(HUB_LOG_INFO, "m", "a=%.0f b=%.2f c=%g d=%g n=%d", 2.5, 1.005, 0.25, INFINITY, 9);
    ASSERT_STREQ(fields(), ",\"a\":2,\"b\":1.00,\"c\":0.25,\"d\":\"inf\",\"n\":9}\n");
}

TEST(precision_string_and_percent_literal)
{
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_JSON);
    hub_log(HUB_LOG_INFO, "m", "s=%.*s p=50%% q=%d", 3, "abcdef", 1);
    ASSERT_STREQ(fields(), ",\"s\":\"abc\",\"p\":\"50%\",\"q\":1}\n");
}

TEST(malformed_tokens_keep_the_arguments_in_step)
{
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_JSON);
    hub_log(HUB_LOG_INFO, "m", "%d a=%s =x b=%s", 4, "one", "two");
    ASSERT_STREQ(fields(), ",\"?\":4,\"a\":\"one\",\"?\":\"=x\",\"b\":\"two\"}\n");
}

TEST(long_compound_value_is_cut_not_overrun)
{
    char big[2000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_JSON);
    hub_log(HUB_LOG_INFO, "m", "v=<%s> n=%d", big, 1);
    const char *f = fields();
    ASSERT(strncmp(f, ",\"v\":\"<zzz", 10) == 0);
    const char *end = strstr(f, "\",\"n\":1}\n");
    ASSERT(end != NULL);
    ASSERT_EQ(end - (f + 6), 512); /* cut at the 512 bytes log.h promises */
}

TEST(text_format_quotes_values_with_spaces)
{
    hub_log_setup(HUB_LOG_DEBUG, HUB_LOG_TEXT);
    hub_log(HUB_LOG_WARN, "m", "addr=%s:%d why=%s", "::1", 9, "no route");
    ASSERT_STREQ(fields(), " addr=::1:9 why=\"no route\"\n");
}

TEST(ratelog_says_how_many_events_each_line_stands_for)
{
    hub_ratelog_t r = { 0, 0 };
    ASSERT_EQ(hub_ratelog_hit(&r, 5000), 1);  /* the first event logs */
    ASSERT_EQ(hub_ratelog_hit(&r, 5001), 0);
    ASSERT_EQ(hub_ratelog_hit(&r, 14999), 0); /* still inside 10 s */
    ASSERT_EQ(hub_ratelog_hit(&r, 15000), 3); /* these three since the line */
    ASSERT_EQ(hub_ratelog_hit(&r, 15001), 0);
    ASSERT_EQ(hub_ratelog_hit(&r, 90000), 2);
}

int main(void)
{
    if (pipe(pipe_fd) != 0 || dup2(pipe_fd[1], STDERR_FILENO) < 0)
        return 2;
    RUN(one_conversion_per_value);
    RUN(text_and_conversions_mixed_in_one_value);
    RUN(doubles_with_and_without_precision);
    RUN(precision_string_and_percent_literal);
    RUN(malformed_tokens_keep_the_arguments_in_step);
    RUN(long_compound_value_is_cut_not_overrun);
    RUN(text_format_quotes_values_with_spaces);
    RUN(ratelog_says_how_many_events_each_line_stands_for);
    HARNESS_MAIN_END();
}
