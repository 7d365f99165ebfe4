/* harness.h: a tiny test harness. TEST(name) defines a test; RUN(name) runs
 * it; ASSERT_* record a failure and return from the test. HARNESS_MAIN
 * prints "N passed, N failed" and exits non-zero on any failure. */
#ifndef HUB_TEST_HARNESS_H
#define HUB_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

static int harness_passed, harness_failed, harness_cur_failed;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                              \
    do {                                                                       \
        harness_cur_failed = 0;                                                \
        test_##name();                                                         \
        if (harness_cur_failed) {                                              \
            harness_failed++;                                                  \
            printf("FAIL %s\n", #name);                                        \
        } else {                                                               \
            harness_passed++;                                                  \
            printf("ok   %s\n", #name);                                        \
        }                                                                      \
        fflush(stdout);                                                        \
    } while (0)

#define FAILF(...)                                                             \
    do {                                                                       \
        printf("  %s:%d: ", __FILE__, __LINE__);                               \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
        harness_cur_failed = 1;                                                \
        return;                                                                \
    } while (0)

#define ASSERT(cond)                                                           \
    do { if (!(cond)) FAILF("assertion failed: %s", #cond); } while (0)
#define ASSERT_EQ(a, b)                                                        \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_) FAILF("%s == %s: %lld != %lld", #a, #b, a_, b_);         \
    } while (0)
#define ASSERT_STREQ(a, b)                                                     \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                 \
            FAILF("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",    \
                  b_ ? b_ : "(null)");                                         \
    } while (0)
#define ASSERT_MEMEQ(a, b, n)                                                  \
    do { if (memcmp((a), (b), (n)) != 0) FAILF("%s != %s (%zu bytes)", #a, #b, (size_t)(n)); } while (0)

#define HARNESS_MAIN_END()                                                     \
    do {                                                                       \
        printf("%d passed, %d failed\n", harness_passed, harness_failed);      \
        return harness_failed ? 1 : 0;                                         \
    } while (0)

#endif
