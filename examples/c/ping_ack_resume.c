/*
 * ping_ack_resume: the gomuks keepalive, acknowledgement and resume flow through the C API.
 *
 * Connects to a running tether-backend (or any gomuks backend), sends a request every two
 * seconds, prints each pong with its round-trip time and the event id it acknowledged, rides
 * out the cuts the backend makes, shows the events it missed being replayed, and closes
 * cleanly after the given number of seconds with close code 1000, so the backend keeps the
 * events a later client resuming from the printed resume state will need.
 *
 *   tether-backend --event-rate 20 --cut-after-events 40 &     # prints its address
 *   ping_ack_resume http://127.0.0.1:PORT [seconds] [user] [password]
 *
 * The same program drives the gomuks backend bundled into the process instead (its C FFI,
 * libgomuksffi, loaded at run time): no socket, so no pings, cuts or resume, but the same
 * events, requests and close.
 *
 *   ping_ack_resume --in-process /path/to/libgomuksffi.so DATA_ROOT [seconds]
 *
 * On each reconnect that asks to resume, the RESUMED event says how it went: SUCCEEDED (the missed
 * events were replayed, each once), RESET (the backend restarted or lost the resume point: the
 * cached state is dropped and the fresh state follows) or CAUGHT_UP (with last_server_ts only).
 *
 * Exit status 0 when every buffered event arrived exactly once and in order, a reset starting
 * afresh, and the client reached CLOSED (in-process: when every request was answered).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tether.h"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int check(tether_status s, const char *what) {
    if (s != TETHER_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, tether_status_str(s), tether_last_error());
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    /* --in-process LIBRARY ROOT takes the place of the URL; everything after is the same. */
    int in_process = argc > 1 && strcmp(argv[1], "--in-process") == 0;
    int first = in_process ? 3 : 1; /* index of the last transport argument */
    if (argc <= first) {
        fprintf(stderr,
                "usage: %s URL [seconds] [user] [password]\n"
                "       %s --in-process LIBGOMUKSFFI DATA_ROOT [seconds]\n",
                argv[0], argv[0]);
        return 2;
    }
    int seconds = argc > first + 1 ? atoi(argv[first + 1]) : 10;
    const char *user = argc > first + 2 ? argv[first + 2] : "tether";
    const char *password = argc > first + 3 ? argv[first + 3] : "tether-password";
    /* The testkit answers "echo"; the bundled backend has no such command, but answers the
     * FFI-only get_account_info (null while logged out). */
    const char *command = in_process ? "get_account_info" : "echo";
    printf("tether %s\n", tether_version());

    tether_config *cfg = NULL;
    tether_client *c = NULL;
    if (!check(tether_config_new(&cfg), "config") ||
        !check(in_process ? tether_config_set_in_process(cfg, argv[2], argv[3])
                          : tether_config_set_url(cfg, argv[1]),
               "transport") ||
        !check(tether_config_set_basic_auth(cfg, user, password), "auth") ||
        !check(tether_config_set_ping_interval_ms(cfg, 1000), "ping interval") ||
        !check(tether_client_new(cfg, &c), "client")) {
        tether_config_free(cfg);
        return 1;
    }
    tether_config_free(cfg); /* the client keeps its own copy */
    if (!check(tether_client_connect(c), "connect")) {
        tether_client_free(c);
        return 1;
    }

    /* Buffered event ids count down (-1, -2, ...): each must be one below the previous. */
    int64_t last_id = 0; /* most recent buffered event id (negative); 0: none since a fresh start */
    int64_t received = 0, gaps = 0, replayed = 0, pongs = 0, cuts = 0, resets = 0, asked = 0,
            answered = 0;
    /* Between a CONNECTED that asked to resume and its RESUMED: the events that arrive are the
     * replay if the resume succeeds, the new state if it is reset, so an id that does not follow
     * is only a gap once RESUMED says SUCCEEDED. */
    int resuming = 0;
    int64_t unsure = 0;
    int64_t end = now_ms() + (int64_t)seconds * 1000, next_request = now_ms() + 2000;
    int closing = 0, closed = 0;
    while (!closed) {
        int64_t now = now_ms();
        if (!closing && now >= end) {
            printf(in_process ? "closing\n" : "closing (1000: the backend keeps what a resume needs)\n");
            check(tether_client_close_keep_resume(c), "close");
            closing = 1;
        }
        if (!closing && now >= next_request) {
            int64_t id = 0;
            const char *body = "{\"hello\":\"from C\"}";
            if (check(tether_client_request(c, command, (const uint8_t *)body, strlen(body), &id),
                      "request")) {
                printf("request %lld: %s %s\n", (long long)id, command, body);
                asked++;
            }
            next_request = now + 2000;
        }
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, 200, &ev);
        if (s == TETHER_TIMEOUT) continue;
        if (s == TETHER_CLOSED) { /* CLOSED was taken already */
            closed = 1;
            break;
        }
        if (!check(s, "poll")) break; /* not closed: see the resume state below */
        const uint8_t *data = NULL;
        size_t len = 0;
        tether_event_data(ev, &data, &len);
        switch (tether_event_kind(ev)) {
        case TETHER_EVENT_CONNECTING:
            printf("connecting (attempt %u)\n", tether_event_attempt(ev));
            break;
        case TETHER_EVENT_CONNECTED:
            resuming = tether_event_resume_attempted(ev);
            replayed = 0;
            printf("connected%s\n", resuming ? ", resuming after the last received event" : "");
            if (resuming)
                printf("  resume from event %lld\n", (long long)last_id);
            else
                last_id = 0; /* no resume asked: the backend sends its state afresh */
            break;
        case TETHER_EVENT_RESUMED:
            /* Once per connection that asked to resume, before the message that decided it. */
            switch (tether_event_resume_outcome(ev)) {
            case TETHER_RESUME_SUCCEEDED:
                /* The missed events arrived just before, each once: keep the cached state. */
                gaps += unsure;
                printf("  RESUMED SUCCEEDED: replayed %lld missed events, up to %lld; %s\n",
                       (long long)replayed, (long long)last_id, gaps ? "WITH GAPS" : "in order, no gap");
                break;
            case TETHER_RESUME_RESET:
                /* The backend restarted or no longer held the resume point: the missed events
                 * are gone and its state comes afresh (a new run's ids start again at -1). */
                resets++;
                printf("  RESUMED RESET: drop the cached state; the fresh state follows\n");
                last_id = 0;
                break;
            case TETHER_RESUME_CAUGHT_UP:
                /* Only with tether_config_set_last_server_ts: the missed events are gone, but a
                 * sync_complete with catchup brings the cached state up to date. */
                printf("  RESUMED CAUGHT_UP: keep the cached state; a catchup sync_complete follows\n");
                last_id = 0;
                break;
            default:
                break;
            }
            resuming = 0;
            unsure = 0;
            break;
        case TETHER_EVENT_DISCONNECTED:
            if (tether_event_retry_in_ms(ev) >= 0) cuts++; /* not our close, nor a refusal */
            printf("disconnected: %s, close code %u, \"%.*s\"; retry in %lld ms\n",
                   tether_status_str(tether_event_status(ev)), tether_event_close_code(ev),
                   (int)len, (const char *)data, (long long)tether_event_retry_in_ms(ev));
            break;
        case TETHER_EVENT_MESSAGE: {
            int64_t id = tether_event_request_id(ev);
            if (id < 0) {
                if (last_id != 0 && id != last_id - 1) {
                    if (resuming) {
                        printf("  event %lld after %lld: a gap unless the resume was reset\n",
                               (long long)id, (long long)last_id);
                        unsure++;
                    } else {
                        printf("  GAP: event %lld after %lld\n", (long long)id, (long long)last_id);
                        gaps++;
                    }
                }
                if (id < last_id || last_id == 0) last_id = id;
                received++;
                if (resuming && replayed++ == 0) printf("  replay starts at event %lld\n", (long long)id);
            } else {
                printf("event %s\n", tether_event_command(ev));
            }
            break;
        }
        case TETHER_EVENT_RESPONSE:
            answered++;
            if (in_process)
                /* get_account_info carries the Matrix access token: never print it. */
                printf("response %lld: %s (%zu bytes)\n", (long long)tether_event_request_id(ev),
                       tether_status_str(tether_event_status(ev)), len);
            else
                printf("response %lld: %s %.*s\n", (long long)tether_event_request_id(ev),
                       tether_status_str(tether_event_status(ev)), (int)len, (const char *)data);
            break;
        case TETHER_EVENT_PONG:
            pongs++;
            printf("pong: rtt %lld us, acknowledged event %lld\n",
                   (long long)tether_event_rtt_us(ev), (long long)tether_event_acked_id(ev));
            break;
        case TETHER_EVENT_CLOSED:
            printf("closed\n");
            closed = 1;
            break;
        default:
            break;
        }
        tether_event_free(ev);
    }
    /* Read after CLOSED: until then, events delivered during the close still move it. */
    char run_id[128];
    int64_t last = 0;
    size_t run_id_len = 0;
    if (!closed)
        printf("resume state not persisted: read before CLOSED it may be behind (a later "
               "client would get some events twice)\n");
    else if (tether_client_resume_state(c, run_id, sizeof run_id, &run_id_len, &last) == TETHER_OK)
        printf("resume state to persist: run_id %s, last event %lld\n", run_id, (long long)last);
    tether_client_free(c);
    printf("summary: %lld events, %lld gaps, %lld cuts survived, %lld resets, %lld pongs, "
           "%lld of %lld requests answered\n",
           (long long)received, (long long)gaps, (long long)cuts, (long long)resets,
           (long long)pongs, (long long)answered, (long long)asked);
    if (in_process) return closed && asked > 0 && answered == asked ? 0 : 1;
    return closed && gaps == 0 && received > 0 ? 0 : 1;
}
