/* The C API throughput client: reads the blaster's stream through tether_client_poll (one event
 * per call) or tether_client_poll_batch (a copying batch, or with "lent" a lending one), timed
 * from the first server message to the end marker.
 * With "rtt COUNT" it instead times COUNT requests to the echo server, one at a time, from
 * tether_client_request to the RESPONSE taken with tether_client_poll.
 * Usage: blast_c URL COMPRESS(0|1) single|batch|lent|rtt [COUNT] */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tether.h"

/* Context switches of every thread of this process (/proc/self/task/N/status, voluntary plus
 * non-voluntary): the wake-ups a hand-off between threads costs. */
static unsigned long long switches(void) {
    unsigned long long sum = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return 0;
    struct dirent *t;
    while ((t = readdir(d)) != NULL) {
        if (t->d_name[0] == '.') continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", t->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f)) {
            unsigned long long n;
            if (sscanf(line, "voluntary_ctxt_switches: %llu", &n) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %llu", &n) == 1)
                sum += n;
        }
        fclose(f);
    }
    closedir(d);
    return sum;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void check(tether_status s, const char *what) {
    if (s != TETHER_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, tether_status_str(s), tether_last_error());
        exit(1);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int rtt(struct tether_client *c, int count) {
    double *us = calloc((size_t)count, sizeof *us);
    struct tether_event *ev;
    /* Wait for the connection, so the first sample holds no handshake. */
    for (;;) {
        check(tether_client_poll(c, -1, &ev), "poll");
        uint32_t kind = tether_event_kind(ev);
        tether_event_free(ev);
        if (kind == TETHER_EVENT_CONNECTED) break;
    }
    for (int i = 0; i < count; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "{\"n\":%d}", i);
        int64_t id;
        double t = now();
        check(tether_client_request(c, "echo", (const uint8_t *)body, (size_t)len, &id), "request");
        for (;;) {
            check(tether_client_poll(c, -1, &ev), "poll");
            int mine = tether_event_kind(ev) == TETHER_EVENT_RESPONSE && tether_event_request_id(ev) == id;
            tether_event_free(ev);
            if (mine) break;
        }
        us[i] = (now() - t) * 1e6;
    }
    qsort(us, (size_t)count, sizeof *us, cmp_double);
    printf("{\"client\":\"c\",\"n\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", count,
           us[(int)((count - 1) * 0.5 + 0.5)], us[(int)((count - 1) * 0.99 + 0.5)]);
    fflush(stdout);
    free(us);
    tether_client_close(c);
    while (tether_client_poll(c, 5000, &ev) == TETHER_OK) tether_event_free(ev);
    tether_client_free(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s URL COMPRESS single|batch|lent|rtt [COUNT]\n", argv[0]);
        return 2;
    }
    int lent = strcmp(argv[3], "lent") == 0;
    int batch_mode = lent || strcmp(argv[3], "batch") == 0;
    struct tether_config *cfg;
    check(tether_config_new(&cfg), "config");
    check(tether_config_set_url(cfg, argv[1]), "url");
    check(tether_config_set_token(cfg, "bench-token"), "token");
    check(tether_config_set_compression(cfg, argv[2][0] == '1'), "compression");
    check(tether_config_set_allow_insecure_credentials(cfg, true), "insecure");
    check(tether_config_set_ping_interval_ms(cfg, 300000), "ping");
    check(tether_config_set_receive_timeout_ms(cfg, 600000), "receive timeout");
    struct tether_client *c;
    check(tether_client_new(cfg, &c), "client");
    tether_config_free(cfg);
    check(tether_client_connect(c), "connect");

    if (strcmp(argv[3], "rtt") == 0) return rtt(c, argc > 4 ? atoi(argv[4]) : 1000);

    double start = 0;
    unsigned long long events = 0, sum = 0, csw0 = 0;
    int done = 0;
    if (batch_mode) {
        struct tether_batch *b;
        check(lent ? tether_batch_new_lending(1024, &b) : tether_batch_new(1024, &b), "batch");
        while (!done) {
            size_t n;
            check(tether_client_poll_batch(c, -1, b, &n), "poll_batch");
            const tether_batch_entry *e;
            const uint8_t *bytes;
            size_t count, blen;
            check(tether_batch_view(b, &e, &count, &bytes, &blen), "view");
            /* Both kinds of batch lend every payload here, so the reads below are the same. */
            const tether_bytes *data;
            check(tether_batch_payloads(b, &data, &count), "payloads");
            for (size_t i = 0; i < count && !done; i++) {
                if (e[i].kind == TETHER_EVENT_DISCONNECTED) {
                    fprintf(stderr, "disconnected: %.*s\n", (int)data[i].len, (const char *)data[i].ptr);
                    return 1;
                }
                if (e[i].kind != TETHER_EVENT_MESSAGE) continue;
                if (start == 0) {
                    csw0 = switches();
                    start = now();
                }
                sum += (unsigned long long)e[i].request_id ^ data[i].len;
                if (e[i].command_len == 9 && memcmp(bytes + e[i].command_offset, "bench_end", 9) == 0)
                    done = 1;
                else
                    events++;
            }
        }
        tether_batch_free(b);
    } else {
        while (!done) {
            struct tether_event *ev;
            check(tether_client_poll(c, -1, &ev), "poll");
            uint32_t kind = tether_event_kind(ev);
            if (kind == TETHER_EVENT_DISCONNECTED) {
                fprintf(stderr, "disconnected\n");
                return 1;
            }
            if (kind == TETHER_EVENT_MESSAGE) {
                if (start == 0) {
                    csw0 = switches();
                    start = now();
                }
                const uint8_t *p;
                size_t len;
                tether_event_data(ev, &p, &len);
                sum += (unsigned long long)tether_event_request_id(ev) ^ len;
                if (strcmp(tether_event_command(ev), "bench_end") == 0)
                    done = 1;
                else
                    events++;
            }
            tether_event_free(ev);
        }
    }
    double secs = now() - start;
    unsigned long long csw = switches() - csw0;
    if (sum == 42) fputc(' ', stderr); /* keeps the reads alive */
    /* The run_id snapshot is not an event of the stream. */
    printf("{\"client\":\"c-%s\",\"events\":%llu,\"secs\":%.6f,\"eps\":%.1f,\"csw\":%llu}\n", argv[3],
           events - 1, secs, (events - 1) / secs, csw);
    fflush(stdout);
    tether_client_close(c);
    struct tether_event *ev;
    while (tether_client_poll(c, 5000, &ev) == TETHER_OK) tether_event_free(ev);
    tether_client_free(c);
    return 0;
}
