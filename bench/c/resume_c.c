/* Resume latency through the C API (tether_client_poll): the time from the backend cutting the
 * connection to the first replayed event handed to the application. Same cycle and same checks
 * as the Rust-API client (bench/src/resume.rs, which explains the design): the testkit backend
 * cuts and pushes PER_CUT events under one lock (POST /_testkit/cut?push=N), and the first event
 * after the reconnect must be exactly the next id, followed by the rest without gap or
 * duplicate, all before init_complete, on a connection that attempted a resume.
 * Prints one JSON line with every sample in milliseconds.
 * Usage: resume_c URL CUTS PER_CUT BACKOFF_MIN_MS|default */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "tether.h"

/* The library's default gomuks backoff (src/config.rs); checked against the drawn delays. */
#define DEFAULT_MIN_MS 125
#define DEFAULT_MAX_MS 10000
#define PAUSE_MS 20
#define STALL_MS 30000

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "resume_c: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void check(tether_status s, const char *what) {
    if (s != TETHER_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, tether_status_str(s), tether_last_error());
        exit(1);
    }
}

static int port;

/* One POST to the backend's control port; returns newest_id from the answer (0 if absent). */
static long long control(const char *path) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) die("control connect: %s", strerror(errno));
    char req[256];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", path);
    if (write(s, req, (size_t)n) != n) die("control write %s", path);
    char resp[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof resp - 1 && (r = read(s, resp + len, sizeof resp - 1 - len)) > 0) len += (size_t)r;
    close(s);
    resp[len] = 0;
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0) die("control %s failed: %s", path, resp);
    const char *p = strstr(resp, "\"newest_id\":");
    return p ? strtoll(p + strlen("\"newest_id\":"), NULL, 10) : 0;
}

static struct tether_event *next_event(struct tether_client *c) {
    struct tether_event *ev;
    tether_status s = tether_client_poll(c, STALL_MS, &ev);
    if (s == TETHER_TIMEOUT) die("no event within %d ms", STALL_MS);
    check(s, "poll");
    return ev;
}

static int is_command(struct tether_event *ev, const char *name) {
    const char *cmd = tether_event_command(ev);
    return cmd && strcmp(cmd, name) == 0;
}

static void print_list(const char *name, const double *v, int n) {
    printf(",\"%s\":[", name);
    for (int i = 0; i < n; i++) printf("%s%.3f", i ? "," : "", v[i]);
    printf("]");
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s URL CUTS PER_CUT BACKOFF_MIN_MS|default\n", argv[0]);
        return 2;
    }
    const char *colon = strrchr(argv[1], ':');
    port = colon ? atoi(colon + 1) : 0;
    int cuts = atoi(argv[2]), per_cut = atoi(argv[3]);
    int is_default = strcmp(argv[4], "default") == 0;
    int min_ms = is_default ? DEFAULT_MIN_MS : atoi(argv[4]);
    int max_ms = is_default ? DEFAULT_MAX_MS : (min_ms > 1000 ? min_ms : 1000);
    if (port <= 0 || cuts < 1 || per_cut < 1 || min_ms < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    struct tether_config *cfg;
    check(tether_config_new(&cfg), "config");
    check(tether_config_set_url(cfg, argv[1]), "url");
    check(tether_config_set_basic_auth(cfg, "tether", "tether-password"), "basic auth");
    check(tether_config_set_compression(cfg, true), "compression"); /* the library default */
    check(tether_config_set_allow_insecure_credentials(cfg, true), "insecure");
    if (!is_default) check(tether_config_set_reconnect_backoff_ms(cfg, (uint32_t)min_ms, (uint32_t)max_ms), "backoff");
    struct tether_client *c;
    check(tether_client_new(cfg, &c), "client");
    tether_config_free(cfg);
    check(tether_client_connect(c), "connect");

    /* The fresh connection's start-up, up to init_complete. */
    for (;;) {
        struct tether_event *ev = next_event(c);
        uint32_t kind = tether_event_kind(ev);
        int done = kind == TETHER_EVENT_MESSAGE && is_command(ev, "init_complete");
        tether_event_free(ev);
        if (kind == TETHER_EVENT_DISCONNECTED) die("disconnected before the first sync");
        if (done) break;
    }
    /* A resume point needs an event: one live batch first. */
    char path[64];
    snprintf(path, sizeof path, "/_testkit/push?n=%d", per_cut);
    long long last = control(path);
    for (long long want = last + per_cut - 1; want >= last;) {
        struct tether_event *ev = next_event(c);
        if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && tether_event_request_id(ev) != 0) {
            if (tether_event_request_id(ev) != want) die("live event out of sequence: %lld, want %lld", (long long)tether_event_request_id(ev), want);
            want--;
        }
        tether_event_free(ev);
    }

    double *disc = calloc((size_t)cuts, sizeof *disc), *conn = calloc((size_t)cuts, sizeof *conn),
           *first = calloc((size_t)cuts, sizeof *first), *caught = calloc((size_t)cuts, sizeof *caught),
           *retry = calloc((size_t)cuts, sizeof *retry), *ctl = calloc((size_t)cuts, sizeof *ctl);
    snprintf(path, sizeof path, "/_testkit/cut?push=%d", per_cut);
    for (int cycle = 0; cycle < cuts; cycle++) {
        struct timespec pause = {0, PAUSE_MS * 1000000L};
        nanosleep(&pause, NULL);
        double t0 = now_ms();
        long long newest = control(path);
        ctl[cycle] = now_ms() - t0;
        if (newest != last - per_cut) die("cycle %d: events were pushed by someone else (newest %lld)", cycle, newest);
        double t_disc = -1, t_conn = -1, t_first = -1;
        long long want = last - 1;
        for (;;) {
            struct tether_event *ev = next_event(c);
            double at = now_ms() - t0;
            uint32_t kind = tether_event_kind(ev);
            int64_t id = tether_event_request_id(ev);
            int done = 0;
            switch (kind) {
            case TETHER_EVENT_CONNECTING:
            case TETHER_EVENT_PONG:
                break;
            case TETHER_EVENT_DISCONNECTED: {
                if (t_disc >= 0) die("cycle %d: reconnect failed", cycle);
                /* Whole milliseconds, truncated (tether_event_retry_in_ms). */
                long long r = tether_event_retry_in_ms(ev);
                if (r < min_ms / 2 || r > min_ms)
                    die("cycle %d: first retry delay %lld ms outside [min/2, min = %d]: has the library's default "
                        "backoff changed? (DEFAULT_MIN_MS)", cycle, r, min_ms);
                retry[cycle] = (double)r;
                t_disc = at;
                break;
            }
            case TETHER_EVENT_RESUMED:
                /* The library's own verdict; the replay below is checked event by event too. */
                if (tether_event_resume_outcome(ev) != TETHER_RESUME_SUCCEEDED)
                    die("cycle %d: resume failed (outcome %u)", cycle, tether_event_resume_outcome(ev));
                break;
            case TETHER_EVENT_CONNECTED:
                if (t_disc < 0) die("cycle %d: CONNECTED without a cut", cycle);
                if (!tether_event_resume_attempted(ev)) die("cycle %d: no resume attempted", cycle);
                t_conn = at;
                break;
            case TETHER_EVENT_MESSAGE:
                if (t_conn < 0) die("cycle %d: event %lld arrived on the cut connection", cycle, (long long)id);
                if (id == 0) {
                    if (is_command(ev, "init_complete")) {
                        if (want != newest - 1) die("cycle %d: init_complete before the replay ended (next expected %lld)", cycle, want);
                        caught[cycle] = at;
                        done = 1;
                    } else if (is_command(ev, "sync_complete")) {
                        die("cycle %d: fresh start (initial sync): resume failed", cycle);
                    }
                    break;
                }
                if (id != want) die("cycle %d: expected event %lld, got %lld (%s)", cycle, want, (long long)id, id < want ? "gap" : "duplicate");
                if (t_first < 0) t_first = at;
                want--;
                break;
            default:
                die("cycle %d: unexpected event kind %u", cycle, kind);
            }
            tether_event_free(ev);
            if (done) break;
        }
        if (t_first < 0) die("cycle %d: no replayed event", cycle);
        disc[cycle] = t_disc;
        conn[cycle] = t_conn;
        first[cycle] = t_first;
        last = newest;
    }
    printf("{\"client\":\"c\",\"backoff_default\":%s,\"backoff_min_ms\":%d,\"backoff_max_ms\":%d,\"compress\":1,"
           "\"cuts\":%d,\"per_cut\":%d,\"pause_ms\":%d,\"replayed_checked\":%d",
           is_default ? "true" : "false", min_ms, max_ms, cuts, per_cut, PAUSE_MS, cuts * per_cut);
    print_list("disc_ms", disc, cuts);
    print_list("conn_ms", conn, cuts);
    print_list("first_ms", first, cuts);
    print_list("caught_up_ms", caught, cuts);
    print_list("retry_ms", retry, cuts);
    print_list("ctl_ms", ctl, cuts);
    printf("}\n");
    fflush(stdout);
    free(disc), free(conn), free(first), free(caught), free(retry), free(ctl);
    tether_client_close(c);
    struct tether_event *ev;
    while (tether_client_poll(c, 5000, &ev) == TETHER_OK) tether_event_free(ev);
    tether_client_free(c);
    return 0;
}
