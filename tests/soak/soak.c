/*
 * Reconnect/resume soak through the C API (gomuks-rpc.md §16 resume, §7.4 acks).
 * One client lives through N cycles of: the backend cuts the connection (/_testkit/cut), two
 * events are pushed while the client is away, the client reconnects with run_id +
 * last_received_event and receives them exactly once and in order. After a warm-up the
 * process's RSS (/proc/self/statm), open descriptors (/proc/self/fd) and threads
 * (/proc/self/task) are sampled; at the end RSS may have grown by less than 1 MiB and the
 * descriptor and thread counts must be back to the warm-up values.
 *
 * Usage: soak CYCLES   (TETHER_BACKEND must point at tether-backend)
 */
#include <dirent.h>

#include "harness.h"

static th_backend backend;

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f != NULL);
    long size = 0, resident = 0;
    CHECK(fscanf(f, "%ld %ld", &size, &resident) == 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int count_dir(const char *path) {
    DIR *d = opendir(path);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

typedef struct {
    long rss_kib;
    int fds;
    int threads;
} sample;

static sample take_sample(void) {
    sample s;
    s.fds = count_dir("/proc/self/fd") - 1; /* minus the DIR's own descriptor */
    s.threads = count_dir("/proc/self/task");
    s.rss_kib = rss_kib();
    return s;
}

/* Takes events until MESSAGE `newest` arrived; ids must follow `*prev` with no gap or
 * duplicate. Returns how many CONNECTED events with a resume attempt were seen. */
static int take_until(tether_client *c, int64_t newest, int64_t *prev) {
    int resumed = 0;
    int64_t deadline = th_now_ms() + 20000 * th_scale();
    while (*prev != newest) {
        if (th_now_ms() > deadline) th_fail(__FILE__, __LINE__, "event %lld not delivered",
                                            (long long)newest);
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, 1000, &ev);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        uint32_t kind = tether_event_kind(ev);
        int64_t id = tether_event_request_id(ev);
        if (kind == TETHER_EVENT_CONNECTED && tether_event_resume_attempted(ev)) {
            resumed++;
        } else if (kind == TETHER_EVENT_MESSAGE && id < 0) {
            if (id != *prev - 1)
                th_fail(__FILE__, __LINE__, "event %lld after %lld: gap or duplicate",
                        (long long)id, (long long)*prev);
            *prev = id;
        }
        tether_event_free(ev);
    }
    return resumed;
}

int main(int argc, char **argv) {
    int cycles = argc > 1 ? atoi(argv[1]) : 500;
    CHECK(cycles >= 20);
    int warmup = cycles / 10 < 200 ? cycles / 10 : 200;
    th_backend_start(&backend, NULL);
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 1, 5));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    int64_t prev = th_push(&backend, 1);
    CHECK(take_until(c, prev, &(int64_t){prev + 1}) == 0);

    sample warm = {0, 0, 0};
    int resumed = 0;
    int64_t t0 = th_now_ms();
    for (int i = 0; i < cycles; i++) {
        if (i == warmup) warm = take_sample();
        CHECK(th_control(&backend, "POST", "/_testkit/cut", NULL, 0) == 200);
        th_push(&backend, 1);
        int64_t newest = th_push(&backend, 1);
        resumed += take_until(c, newest, &prev);
    }
    int64_t elapsed = th_now_ms() - t0;
    sample end = take_sample();
    for (int i = 0; i < 50 && (end.threads != warm.threads || end.fds != warm.fds); i++) {
        usleep(100 * 1000);
        end = take_sample();
    }
    fprintf(stderr,
            "soak: %d cycles in %lld ms (%d resumed); after %d warm-up cycles rss %ld KiB "
            "fds %d threads %d; at the end rss %ld KiB (%+ld KiB) fds %d threads %d\n",
            cycles, (long long)elapsed, resumed, warmup, warm.rss_kib, warm.fds, warm.threads,
            end.rss_kib, end.rss_kib - warm.rss_kib, end.fds, end.threads);
    /* Every cut must have been followed by a resume (events pushed while away arrived). */
    CHECK(resumed == cycles);
    CHECK(end.rss_kib - warm.rss_kib < 1024);
    CHECK(end.fds == warm.fds);
    CHECK(end.threads == warm.threads);
    th_close_and_free(c);
    th_backend_stop(&backend);
    fprintf(stderr, "ok   soak %d cycles\n", cycles);
    return 0;
}
