/**
 * @file unit.h
 * @brief A very small test runner: CHECK records a failure and goes on, RUN_TEST prints one line per test.
 */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failures;
static int unit_checks;
static int unit_test_failed;

#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        unit_checks++;                                                                                                \
        if (!(cond)) {                                                                                                \
            unit_failures++;                                                                                          \
            unit_test_failed = 1;                                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                 \
        }                                                                                                             \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                                            \
    do {                                                                                                              \
        long long unit_a_ = (long long)(a);                                                                           \
        long long unit_b_ = (long long)(b);                                                                           \
        unit_checks++;                                                                                                \
        if (unit_a_ != unit_b_) {                                                                                     \
            unit_failures++;                                                                                          \
            unit_test_failed = 1;                                                                                     \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, unit_a_, #b,         \
                    unit_b_);                                                                                         \
        }                                                                                                             \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                                            \
    do {                                                                                                              \
        const char *unit_a_ = (a);                                                                                    \
        const char *unit_b_ = (b);                                                                                    \
        unit_checks++;                                                                                                \
        if (strcmp(unit_a_, unit_b_) != 0) {                                                                          \
            unit_failures++;                                                                                          \
            unit_test_failed = 1;                                                                                     \
            fprintf(stderr, "%s:%d: got\n  %s\nexpected\n  %s\n", __FILE__, __LINE__, unit_a_, unit_b_);           \
        }                                                                                                             \
    } while (0)

#define RUN_TEST(fn)                                                                                                  \
    do {                                                                                                              \
        unit_test_failed = 0;                                                                                         \
        fn();                                                                                                         \
        printf("%s %s\n", unit_test_failed ? "FAIL" : "ok  ", #fn);                                                   \
    } while (0)

#define UNIT_END()                                                                                                    \
    (printf("%d checks, %d failures\n", unit_checks, unit_failures), unit_failures == 0 ? 0 : 1)

#endif /* UNIT_H */
