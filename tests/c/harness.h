/*
 * Test harness for the C API tests: starts a real tether-backend process, drives its HTTP
 * control endpoints over a plain socket, and offers event helpers with deadlines.
 * C11 and C++ compatible; POSIX only. Every wait is bounded; a failed check exits at once
 * (with _exit, so a failure does not also print leak reports of the half-run test).
 */
#ifndef TETHER_TEST_HARNESS_H
#define TETHER_TEST_HARNESS_H

#include "tether.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The running backend, killed on failure so it never outlives a failed test. */
static pid_t th_backend_pid;

static inline void th_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " [last error: %s]\n", tether_last_error());
    fflush(stderr);
    if (th_backend_pid > 0) kill(th_backend_pid, SIGKILL);
    _exit(1);
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) th_fail(__FILE__, __LINE__, "CHECK failed: %s", #cond);               \
    } while (0)

#define CHECK_STATUS(expr, want)                                                           \
    do {                                                                                   \
        tether_status got_ = (expr);                                                       \
        if (got_ != (want))                                                                \
            th_fail(__FILE__, __LINE__, "%s returned %d (%s), expected %s (%d)", #expr,    \
                    (int)got_, tether_status_str(got_), #want, (int)(want));               \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, TETHER_OK)

static inline int64_t th_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Under valgrind everything runs ~20x slower; deadlines scale with TETHER_TEST_SLOW. */
static inline int th_scale(void) {
    const char *s = getenv("TETHER_TEST_SLOW");
    return (s && *s && *s != '0') ? 10 : 1;
}

typedef struct {
    pid_t pid;
    int port;
    char http[64];
    /* The write end of the backend's stdin: it closes when this process dies, however it
     * dies (a sanitizer's abort runs no handler), and tether-backend then exits, so a
     * crashed test never leaves a backend holding the output pipe of the script that runs it. */
    int lifeline;
} th_backend;

/* A pipe whose ends no other child inherits. */
static inline void th_cloexec_pipe(int fds[2]) {
    CHECK(pipe(fds) == 0);
    CHECK(fcntl(fds[0], F_SETFD, FD_CLOEXEC) == 0 && fcntl(fds[1], F_SETFD, FD_CLOEXEC) == 0);
}

/* Starts $TETHER_BACKEND with `args` (NULL-terminated, may be NULL) and waits for its
 * {"started":true,"address":"127.0.0.1:PORT"} line. */
static inline void th_backend_start(th_backend *b, const char *const *args) {
    const char *bin = getenv("TETHER_BACKEND");
    if (!bin) th_fail(__FILE__, __LINE__, "TETHER_BACKEND is not set");
    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    for (; args && *args && n < 31; args++) argv[n++] = *args;
    argv[n] = NULL;
    int fds[2], life[2];
    th_cloexec_pipe(fds);
    th_cloexec_pipe(life);
    /* The environment plus the variable that tells tether-backend to exit when its stdin
     * ends (other backends ignore it); setenv would race the library's threads' getenv. */
    size_t nenv = 0;
    while (environ[nenv]) nenv++;
    char **envp = (char **)calloc(nenv + 2, sizeof *envp);
    CHECK(envp != NULL);
    memcpy(envp, environ, nenv * sizeof *envp);
    envp[nenv] = (char *)"TETHER_BACKEND_EXIT_ON_STDIN_EOF=1";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, life[0], 0);
    int rc = posix_spawn(&b->pid, bin, &fa, NULL, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(fds[1]);
    close(life[0]);
    b->lifeline = life[1];
    if (rc != 0) th_fail(__FILE__, __LINE__, "cannot start %s: %s", bin, strerror(rc));
    th_backend_pid = b->pid;
    char line[256];
    size_t len = 0;
    int64_t deadline = th_now_ms() + 20000;
    while (len < sizeof line - 1 && (len == 0 || line[len - 1] != '\n')) {
        struct pollfd p = {fds[0], POLLIN, 0};
        int left = (int)(deadline - th_now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            th_fail(__FILE__, __LINE__, "backend did not start in time");
        ssize_t r = read(fds[0], line + len, 1);
        if (r <= 0) th_fail(__FILE__, __LINE__, "backend exited before starting");
        len += (size_t)r;
    }
    line[len] = 0;
    close(fds[0]);
    const char *a = strstr(line, "127.0.0.1:");
    if (!a) th_fail(__FILE__, __LINE__, "unexpected start line: %s", line);
    b->port = atoi(a + strlen("127.0.0.1:"));
    snprintf(b->http, sizeof b->http, "http://127.0.0.1:%d", b->port);
}

static inline void th_backend_stop(th_backend *b) {
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, NULL, 0);
        b->pid = 0;
        th_backend_pid = 0;
        close(b->lifeline);
    }
}

/* Sends an HTTP request to the backend's control API; returns the status code and copies
 * the body (NUL-terminated) into `body` if given. */
static inline int th_control(const th_backend *b, const char *method, const char *path, char *body,
                      size_t cap) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)b->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
        th_fail(__FILE__, __LINE__, "control connect: %s", strerror(errno));
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     method, path);
    CHECK(send(s, req, (size_t)n, MSG_NOSIGNAL) == n);
    char resp[65536];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 10000 * th_scale()) <= 0) th_fail(__FILE__, __LINE__, "control timeout");
        ssize_t r = read(s, resp + len, sizeof resp - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        if (len == sizeof resp - 1) break;
    }
    close(s);
    resp[len] = 0;
    int code = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
        th_fail(__FILE__, __LINE__, "bad control response: %s", resp);
    if (body && cap) {
        const char *b0 = strstr(resp, "\r\n\r\n");
        snprintf(body, cap, "%s", b0 ? b0 + 4 : "");
    }
    return code;
}

/* Pushes `n` generated events; returns the newest event id. */
static inline int64_t th_push(const th_backend *b, int n) {
    char path[64], body[256];
    snprintf(path, sizeof path, "/_testkit/push?n=%d", n);
    CHECK(th_control(b, "POST", path, body, sizeof body) == 200);
    const char *p = strstr(body, "\"newest_id\":");
    CHECK(p != NULL);
    return strtoll(p + strlen("\"newest_id\":"), NULL, 10);
}

/* A config for the backend with the testkit's default credentials and fast reconnects. */
static inline tether_config *th_config(const th_backend *b) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, b->http));
    CHECK_OK(tether_config_set_basic_auth(cfg, "tether", "tether-password"));
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 20, 200));
    return cfg;
}

/* The event id of the client's resume state (what the app has taken). */
static inline int64_t th_last_taken(tether_client *c) {
    char run_id[128];
    int64_t last = 1;
    CHECK_OK(tether_client_resume_state(c, run_id, sizeof run_id, NULL, &last));
    return last;
}

static inline tether_client *th_client_from(tether_config *cfg) {
    tether_client *c = NULL;
    CHECK_OK(tether_client_new(cfg, &c));
    tether_config_free(cfg);
    CHECK(c != NULL);
    return c;
}

/* Polls until an event of `kind` (and, if `command` is not NULL, that command) arrives and
 * returns it (owned). Events skipped on the way are freed. Fails after `ms` milliseconds. */
static inline tether_event *th_wait(tether_client *c, uint32_t kind, const char *command, int ms) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "no event of kind %u (%s) in time", kind,
                               command ? command : "-");
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, left, &ev);
        if (s == TETHER_TIMEOUT) continue;
        if (s != TETHER_OK) th_fail(__FILE__, __LINE__, "poll returned %d", (int)s);
        if (tether_event_kind(ev) == kind &&
            (!command || strcmp(tether_event_command(ev), command) == 0))
            return ev;
        tether_event_free(ev);
    }
}

/* The next event of any kind (owned); fails after `ms` milliseconds (scaled under valgrind). */
static inline tether_event *th_next(tether_client *c, int ms) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "no event in time");
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, left, &ev);
        if (s == TETHER_TIMEOUT) continue;
        if (s != TETHER_OK) th_fail(__FILE__, __LINE__, "poll returned %d", (int)s);
        return ev;
    }
}

/* Waits for the RESPONSE to request `id` and returns it (owned). */
static inline tether_event *th_wait_response(tether_client *c, int64_t id, int ms) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    for (;;) {
        tether_event *ev = th_wait(c, TETHER_EVENT_RESPONSE, NULL,
                                   (int)((deadline - th_now_ms()) / th_scale()) + 1);
        if (tether_event_request_id(ev) == id) return ev;
        tether_event_free(ev);
    }
}

/* Whether the event's data equals the NUL-terminated string `want`. */
static inline int th_data_is(const tether_event *ev, const char *want) {
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_OK(tether_event_data(ev, &p, &n));
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

/* Closes the client, takes events until CLOSED, checks poll then says TETHER_CLOSED, and
 * frees it. */
static inline void th_close_and_free(tether_client *c) {
    CHECK_OK(tether_client_close(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000);
    tether_event_free(ev);
    ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_CLOSED);
    CHECK(ev == NULL);
    tether_client_free(c);
}

#define TH_RUN(fn)                                                                         \
    do {                                                                                   \
        int64_t t0_ = th_now_ms();                                                         \
        fn();                                                                              \
        fprintf(stderr, "ok   %-44s %5lld ms\n", #fn, (long long)(th_now_ms() - t0_));      \
    } while (0)

#endif
