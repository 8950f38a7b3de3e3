/*
 * Close racing requests (gomuks spec §3.1; the SHUTDOWN contract of tether.h): threads keep
 * calling tether_client_request while another thread closes. Every id returned with
 * TETHER_OK gets exactly one RESPONSE before CLOSED, and no RESPONSE names an id that was not
 * accepted. Hundreds of rounds with random timing, half while connecting, half connected.
 */
#include "harness.h"

#include <pthread.h>

#define THREADS 3
#define MAX_IDS 50000

static th_backend backend;

typedef struct {
    tether_client *c;
    int64_t ids[MAX_IDS];
    size_t n;
} requester;

static void *request_until_refused(void *arg) {
    requester *r = (requester *)arg;
    static const char data[] = "{\"ms\":50}";
    while (r->n < MAX_IDS) {
        int64_t id = 0;
        tether_status s = tether_client_request(r->c, "sleep", (const uint8_t *)data,
                                                sizeof data - 1, &id);
        if (s != TETHER_OK) {
            /* Refused because the client is closed: the only acceptable reason. */
            CHECK(s == TETHER_ERR_STATE);
            break;
        }
        r->ids[r->n++] = id;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static requester reqs[THREADS];
static int64_t accepted[THREADS * MAX_IDS];
static int64_t answered[THREADS * MAX_IDS + 16];

static void one_round(int round) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    if (round % 2 == 0) tether_event_free(th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        reqs[i].c = c;
        reqs[i].n = 0;
        CHECK(pthread_create(&t[i], NULL, request_until_refused, &reqs[i]) == 0);
    }
    usleep((useconds_t)(rand() % 1000));
    CHECK_OK(tether_client_close(c));
    size_t n_answered = 0;
    /* A stall, not the total, is the failure: how many requests the threads got in before
     * close depends on the scheduler, and each is answered. */
    const int64_t stall_ms = 20000 * (int64_t)th_scale();
    int64_t last_event = th_now_ms();
    for (;;) {
        if (th_now_ms() - last_event > stall_ms)
            th_fail(__FILE__, __LINE__, "round %d: no event for %lld ms after %zu RESPONSE events",
                    round, (long long)stall_ms, n_answered);
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, 1000, &ev);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        last_event = th_now_ms();
        uint32_t kind = tether_event_kind(ev);
        if (kind == TETHER_EVENT_RESPONSE) {
            CHECK(n_answered < sizeof answered / sizeof answered[0]);
            answered[n_answered++] = tether_event_request_id(ev);
        }
        tether_event_free(ev);
        if (kind == TETHER_EVENT_CLOSED) break;
    }
    size_t n_accepted = 0;
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(t[i], NULL) == 0);
        memcpy(accepted + n_accepted, reqs[i].ids, reqs[i].n * sizeof(int64_t));
        n_accepted += reqs[i].n;
    }
    qsort(accepted, n_accepted, sizeof(int64_t), cmp_i64);
    qsort(answered, n_answered, sizeof(int64_t), cmp_i64);
    for (size_t i = 0; i < n_accepted && i < n_answered; i++) {
        if (accepted[i] != answered[i])
            th_fail(__FILE__, __LINE__,
                    "round %d: accepted %zu, answered %zu; first difference: accepted id %lld, "
                    "answered id %lld",
                    round, n_accepted, n_answered, (long long)accepted[i], (long long)answered[i]);
    }
    if (n_accepted != n_answered)
        th_fail(__FILE__, __LINE__, "round %d: accepted %zu requests, %zu RESPONSE events", round,
                n_accepted, n_answered);
    CHECK_STATUS(tether_client_poll(c, 0, NULL), TETHER_ERR_NULL);
    tether_client_free(c);
}

static void test_every_accepted_request_is_answered_before_closed(void) {
    const char *env = getenv("TETHER_CLOSE_RACE_ROUNDS");
    int rounds = env ? atoi(env) : (th_scale() > 1 ? 10 : 200);
    srand((unsigned)th_now_ms());
    for (int round = 0; round < rounds; round++) one_round(round);
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_every_accepted_request_is_answered_before_closed);
    th_backend_stop(&backend);
    return 0;
}
