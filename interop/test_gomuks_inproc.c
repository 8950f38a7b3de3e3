/*
 * tether's in-process transport against the real gomuks FFI: libgomuksffi built from the pinned
 * go.mau.fi/gomuks module ($TETHER_GOMUKS_FFI), loaded by tether_client_connect, not logged in
 * to any homeserver. The same kinds of checks test_gomuks_interop.c makes over the websocket,
 * where they apply in-process. Spec references are to docs/protocol/gomuks-rpc.md (§12 is the
 * FFI).
 *
 * One process runs one Go backend at a time, so the tests run their clients one after another
 * (a new GomuksInit/GomuksStart in the same Go runtime each time). What cannot run in this
 * process runs in a child (this program again, with --child-*): a second process on the same
 * data root, and calls that end the process.
 *
 * Environment (set by interop/run.sh): TETHER_GOMUKS_FFI, GOMUKS_ROOT (a fresh directory for
 * the data roots), GOMUKS_INTEROP_LOG (takes the FFI's stdout log).
 */
#include "gomuks_peer.h"

#include <spawn.h>

/* No RESPONSE for request `id` arrives within ms (other events pass). */
static void expect_no_response(tether_client *c, int64_t id, int ms) {
    int64_t deadline = th_now_ms() + ms;
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) return;
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, left, &ev);
        if (s == TETHER_TIMEOUT) return;
        CHECK_OK(s);
        if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE && tether_event_request_id(ev) == id)
            th_fail(__FILE__, __LINE__, "a second RESPONSE for request %lld", (long long)id);
        tether_event_free(ev);
    }
}

/* A response to `command` with `json`, expected to carry `want`; its data in buf. */
static void call_expect(tether_client *c, const char *command, const char *json,
                        tether_status want, char *buf, size_t cap) {
    int64_t id = request(c, command, json);
    tether_event *ev = th_wait_response(c, id, 15000);
    data_str(ev, buf, cap);
    if (tether_event_status(ev) != want)
        th_fail(__FILE__, __LINE__, "%s answered %s: %.500s", command,
                tether_status_str(tether_event_status(ev)), buf);
    tether_event_free(ev);
}

/* --- children: this program again, for what must not run in this process ----------------- */

/* Starts `argv0 mode root`, its stderr to `err_path` (NULL: ours). */
static pid_t spawn_self(const char *mode, const char *root, const char *err_path) {
    char exe[] = "/proc/self/exe";
    char m[64], r[512];
    snprintf(m, sizeof m, "%s", mode);
    snprintf(r, sizeof r, "%s", root);
    char *argv[] = {exe, m, r, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (err_path) posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) th_fail(__FILE__, __LINE__, "cannot start a child: %s", strerror(rc));
    return pid;
}

/* The child's wait status; killed and failed after ms. */
static int wait_child(pid_t pid, int ms) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        CHECK(r == 0);
        if (th_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            th_fail(__FILE__, __LINE__, "child %d did not finish in %d ms", (int)pid, ms);
        }
        usleep(20000);
    }
}

static int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

/* Connects on root: exits with -status if the connect is refused (11: TETHER_ERR_IN_USE), 0
 * after a normal start and close. */
static void child_connect(const char *root) {
    tether_client *c = inproc_client(root);
    tether_status s = tether_client_connect(c);
    if (s != TETHER_OK) {
        fprintf(stderr, "     child %d: connect: %s\n", (int)getpid(), tether_status_str(s));
        tether_client_free(c);
        _exit(-s);
    }
    inproc_expect_connect(c, 0);
    inproc_close(c, 5000);
    _exit(0);
}

/* upload_media with bytes, not logged in: prints what arrives; exits 0 on a RESPONSE. */
static void child_upload(const char *root) {
    tether_client *c = inproc_connect(root, 0);
    int64_t up = 0, room = 0;
    const char *params = "{\"filename\":\"hello.txt\"}";
    CHECK_OK(tether_client_upload_media(c, (const uint8_t *)params, strlen(params),
                                        (const uint8_t *)"hello", 5, 10000, &up));
    fprintf(stderr, "child: upload requested\n");
    const char *body = "{\"creator\":\"@a:localhost\",\"create_event_content\":{}}";
    CHECK_OK(tether_client_request(c, "calculate_room_id", (const uint8_t *)body, strlen(body), &room));
    int answered = 0;
    int64_t deadline = th_now_ms() + 15000;
    while (answered < 2 && th_now_ms() < deadline) {
        tether_event *ev = NULL;
        if (tether_client_poll(c, 500, &ev) != TETHER_OK) continue;
        char buf[1024];
        if (tether_event_kind(ev) == TETHER_EVENT_PROGRESS)
            fprintf(stderr, "child: PROGRESS %g\n", tether_event_progress(ev));
        int64_t id = tether_event_request_id(ev);
        if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE && (id == up || id == room)) {
            fprintf(stderr, "child: RESPONSE %s %s %s\n", id == up ? "upload" : "calculate_room_id",
                    tether_status_str(tether_event_status(ev)), data_str(ev, buf, sizeof buf));
            answered++;
        }
        tether_event_free(ev);
    }
    _exit(answered == 2 ? 0 : 3);
}

/* Closes while a call blocks in the backend (get_login_flows against a homeserver that never
 * answers): CLOSED comes within a bound, but the process slot and the root stay taken until
 * the call returns and GomuksDestroy ran. */
static void child_busy_close(const char *root) {
    int hs_port = 0;
    int hs = w_listen(&hs_port);
    tether_client *c = inproc_connect(root, 0);
    char params[128];
    snprintf(params, sizeof params, "{\"homeserver_url\":\"http://127.0.0.1:%d\"}", hs_port);
    int64_t id = 0;
    int conn = blocked_login_flows(c, hs, params, 0, &id);
    int64_t took = inproc_close(c, 8000);
    tether_client *again = inproc_client(root);
    tether_status s = tether_client_connect(again);
    fprintf(stderr, "     child: CLOSED %lld ms after close with a call blocked; a new client then: %s\n",
            (long long)took, tether_status_str(s));
    CHECK_STATUS(s, TETHER_ERR_IN_USE);
    /* The homeserver answers; the call returns, the deferred GomuksDestroy runs. */
    const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    w_write_all(conn, r, strlen(r));
    int64_t t0 = th_now_ms();
    while ((s = tether_client_connect(again)) == TETHER_ERR_IN_USE) {
        if (th_now_ms() - t0 > 5000 * th_scale()) th_fail(__FILE__, __LINE__, "slot never released");
        usleep(20000);
    }
    CHECK_OK(s);
    fprintf(stderr, "     child: released %lld ms after the call could return\n",
            (long long)(th_now_ms() - t0));
    inproc_expect_connect(again, 0);
    inproc_close(again, 5000);
    close(conn);
    close(hs);
    _exit(0);
}

/* --- tests -------------------------------------------------------------------------------- */

/* §12.2 GomuksStart, §12.3: CONNECTING, CONNECTED (attempt 1, no resume), then the two events
 * GomuksStart sends itself, client_state (not logged in) and sync_status (waiting), request_id
 * 0; no run_id, no image_auth_token (there is no connection, no buffer, no HTTP server), but
 * a second client_state. Requests made before the start finished wait and are answered after
 * it. */
static void test_start_events_and_early_requests(void) {
    char root[512], buf[8192];
    tether_client *c = inproc_client(inproc_root("a", root, sizeof root));
    int64_t t0 = th_now_ms();
    CHECK_OK(tether_client_connect(c));
    int64_t early_state = request(c, "get_state", "{}");
    int64_t early_key = request(c, "generate_recovery_key", "{\"passphrase\":\"\"}");
    /* Strict order: nothing (no RESPONSE either) before the start events. */
    inproc_expect_connect(c, 0);
    fprintf(stderr, "     started (fresh data root) in %lld ms\n", (long long)(th_now_ms() - t0));
    /* Then, in any order: the two responses and exactly one more client_state, the one
     * hicli.Start dispatched into the event buffer the FFI subscribed to before starting
     * (§12.3), delivered once GomuksStart returned; then nothing for a while. All events have
     * request_id 0. */
    int got_state = 0, got_key = 0, extra_state = 0;
    int64_t deadline = th_now_ms() + 15000 * th_scale();
    int64_t quiet_until = 0;
    for (;;) {
        int64_t now = th_now_ms();
        if (got_state && got_key && extra_state && !quiet_until) quiet_until = now + 1000;
        if (quiet_until && now >= quiet_until) break;
        if (now >= deadline) th_fail(__FILE__, __LINE__, "responses %d %d, extra client_state %d",
                                     got_state, got_key, extra_state);
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, (int)((quiet_until ? quiet_until : deadline) - now), &ev);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        data_str(ev, buf, sizeof buf);
        if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE) {
            CHECK_OK(tether_event_status(ev));
            if (tether_event_request_id(ev) == early_state) {
                CHECK_HAS(buf, "\"is_logged_in\":false");
                got_state++;
            } else {
                CHECK(tether_event_request_id(ev) == early_key);
                CHECK_HAS(buf, "{\"recovery_key\":\"");
                got_key++;
            }
        } else {
            CHECK(tether_event_kind(ev) == TETHER_EVENT_MESSAGE);
            const char *cmd = tether_event_command(ev);
            if (strcmp(cmd, "client_state") != 0)
                th_fail(__FILE__, __LINE__, "unexpected event %s: %.300s", cmd, buf);
            CHECK(tether_event_request_id(ev) == 0);
            CHECK_HAS(buf, "\"is_logged_in\":false");
            extra_state++;
        }
        tether_event_free(ev);
    }
    CHECK(got_state == 1 && got_key == 1 && extra_state == 1);

    /* No run_id: nothing to resume in-process. */
    char run_id[64];
    size_t len = 99;
    int64_t last = 1;
    CHECK_OK(tether_client_resume_state(c, run_id, sizeof run_id, &len, &last));
    CHECK(len == 0 && run_id[0] == 0 && last == 0);
    inproc_close(c, 3000);
}

/* §3.4, §4.1, §12.2: the same account-free requests and errors as over the websocket, through
 * GomuksSubmitCommand; the FFI-only get_account_info (unknown over the websocket) answers. */
static void test_requests_without_account(void) {
    char root[512], buf[8192];
    tether_client *c = inproc_connect(inproc_root("a", root, sizeof root), 0);

    call_expect(c, "generate_recovery_key", "{\"passphrase\":\"\"}", TETHER_OK, buf, sizeof buf);
    CHECK_HAS(buf, "{\"recovery_key\":\"");
    CHECK(strlen(buf) == strlen("{\"recovery_key\":\"\"}") + 12 * 4 + 11);

    /* §12.2 FFI-only: the account (homeserver URL and access token); none yet: null. */
    call_expect(c, "get_account_info", "{}", TETHER_OK, buf, sizeof buf);
    CHECK(strcmp(buf, "null") == 0);

    call_expect(c, "no_such", "{}", TETHER_ERR_REMOTE, buf, sizeof buf);
    CHECK(strcmp(buf, "\"unknown command \\\"no_such\\\"\"") == 0);

    /* Bad params: decoding fails before the handler. (calculate_room_id, used for this over the
     * websocket, is refused by tether here without an account: its handler would panic on the
     * nil account and abort the process; see test_account_commands_refused_without_account.) */
    call_expect(c, "get_login_flows", "\"not an object\"", TETHER_ERR_REMOTE, buf, sizeof buf);
    CHECK_HAS(buf, "json: cannot unmarshal string into Go value of type");
    /* The handler's own check. */
    call_expect(c, "get_login_flows", "{\"homeserver_url\":\"\"}", TETHER_ERR_REMOTE, buf, sizeof buf);
    CHECK(strcmp(buf, "\"invalid homeserver URL\"") == 0);

    /* §3.5: gomuks' cancel command exists, but FFI calls carry no request id: nothing to find. */
    call_expect(c, "cancel", "{\"request_id\":987654321}", TETHER_OK, buf, sizeof buf);
    CHECK(strcmp(buf, "false") == 0);
    inproc_close(c, 3000);
}

/* §3.5, §12.2 (no cancellation in the FFI): a cancel and a per-request timeout are answered at
 * once while the backend still runs the call (get_login_flows against a homeserver that
 * accepts and never answers: unlike over the websocket, the backend keeps its request open),
 * other requests are served meanwhile, and when the call finally returns, its late reply is
 * dropped: no second RESPONSE. */
static void test_timeout_and_cancel_while_backend_busy(void) {
    char root[512], buf[8192];
    tether_client *c = inproc_connect(inproc_root("a", root, sizeof root), 0);
    int hs_port = 0;
    int hs = w_listen(&hs_port);
    char params[128];
    snprintf(params, sizeof params, "{\"homeserver_url\":\"http://127.0.0.1:%d\"}", hs_port);

    for (int round = 0; round < 2; round++) {
        int64_t id = 0;
        int64_t t0 = th_now_ms();
        int conn = blocked_login_flows(c, hs, params, round == 0 ? 0 : 300, &id);
        int64_t t1 = th_now_ms();
        if (round == 0) CHECK_OK(tether_client_cancel(c, id));
        tether_event *ev = th_wait_response(c, id, 5000);
        int64_t now = th_now_ms();
        CHECK_STATUS(tether_event_status(ev),
                     round == 0 ? TETHER_ERR_CANCELLED : TETHER_ERR_REQUEST_TIMEOUT);
        tether_event_free(ev);
        if (round == 0) {
            CHECK(now - t1 < 1000 * th_scale());
            fprintf(stderr, "     cancel answered in %lld ms\n", (long long)(now - t1));
        } else {
            CHECK(now - t0 >= 290 && now - t0 < 2000 * th_scale());
            fprintf(stderr, "     300 ms timeout answered after %lld ms\n", (long long)(now - t0));
        }
        /* The backend cannot be told: its request to the homeserver stays open. */
        if (w_readable(conn, 500)) {
            ssize_t r = read(conn, buf, sizeof buf);
            th_fail(__FILE__, __LINE__, "the backend gave up its call (read %zd)", r);
        }
        /* Another call runs beside the blocked one. */
        call_expect(c, "get_state", "{}", TETHER_OK, buf, sizeof buf);
        /* The homeserver answers at last: the call returns an error the library drops. */
        const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        w_write_all(conn, r, strlen(r));
        CHECK(w_wait_eof(conn, 5000 * th_scale()));
        close(conn);
        expect_no_response(c, id, 500);
        call_expect(c, "get_state", "{}", TETHER_OK, buf, sizeof buf);
    }
    close(hs);
    inproc_close(c, 3000);
}

/* What has no meaning in-process: pause, unpause and reconnect_now (no connection), and the
 * streamed download (the pinned library has no GomuksDownloadMediaPath, §12.2): its RESPONSE
 * carries TETHER_ERR_UNSUPPORTED, and the plain download_media command is unknown there too.
 * The client goes on working. */
static void test_calls_that_do_not_apply(void) {
    char root[512], buf[8192];
    tether_client *c = inproc_connect(inproc_root("a", root, sizeof root), 0);
    CHECK_STATUS(tether_client_pause(c), TETHER_ERR_UNSUPPORTED);
    CHECK_STATUS(tether_client_unpause(c), TETHER_ERR_UNSUPPORTED);
    CHECK_STATUS(tether_client_reconnect_now(c), TETHER_ERR_UNSUPPORTED);

    const char *params = "{\"mxc\":\"mxc://localhost/abcdef\"}";
    int64_t id = 0;
    CHECK_OK(tether_client_download_media(c, (const uint8_t *)params, strlen(params), 0, &id));
    tether_event *ev = th_wait_response(c, id, 5000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_UNSUPPORTED);
    fprintf(stderr, "     download_media: %s\n", data_str(ev, buf, sizeof buf));
    tether_event_free(ev);
    /* Nor has v0.2607.0 the download_media command, streamed or not (§12.2 lists it, newer). */
    call_expect(c, "download_media", params, TETHER_ERR_REMOTE, buf, sizeof buf);
    CHECK(strcmp(buf, "\"unknown command \\\"download_media\\\"\"") == 0);
    call_expect(c, "get_state", "{}", TETHER_OK, buf, sizeof buf);
    inproc_close(c, 3000);
}

/* One backend per process and one client per data root: while a client runs on root a, a
 * second client on a, and one on another root b, get TETHER_ERR_IN_USE from connect; so does
 * another process on root a (the lock file), while another process on root b starts. After
 * the close (DISCONNECTED OK, then CLOSED, bounded), the refused client connects and works,
 * and so does a later one on a fresh root: the slot and the lock were released, and the Go
 * runtime runs GomuksInit/GomuksStart again. */
static void test_in_use_close_and_restart(void) {
    char a[512], b[512], fresh[512], buf[8192];
    inproc_root("a", a, sizeof a);
    inproc_root("b", b, sizeof b);
    inproc_root("fresh", fresh, sizeof fresh);
    tether_client *c = inproc_connect(a, 0);

    tether_client *same_root = inproc_client(a);
    CHECK_STATUS(tether_client_connect(same_root), TETHER_ERR_IN_USE);
    tether_client *other_root = inproc_client(b);
    CHECK_STATUS(tether_client_connect(other_root), TETHER_ERR_IN_USE);
    CHECK_HAS(tether_last_error(), "one at a time");
    tether_client_free(other_root);

    int64_t t0 = th_now_ms();
    int st = wait_child(spawn_self("--child-connect", a, NULL), 60000);
    CHECK(exit_code(st) == -TETHER_ERR_IN_USE);
    int64_t t1 = th_now_ms();
    st = wait_child(spawn_self("--child-connect", b, NULL), 60000);
    CHECK(exit_code(st) == 0);
    fprintf(stderr, "     other process: refused on root a after %lld ms, ran on root b for %lld ms\n",
            (long long)(t1 - t0), (long long)(th_now_ms() - t1));

    int64_t took = inproc_close(c, 3000);
    fprintf(stderr, "     closed in %lld ms\n", (long long)took);

    /* The client refused earlier can connect now. */
    t0 = th_now_ms();
    CHECK_OK(tether_client_connect(same_root));
    inproc_expect_connect(same_root, 0);
    fprintf(stderr, "     restarted on the same root in %lld ms\n", (long long)(th_now_ms() - t0));
    call_expect(same_root, "get_state", "{}", TETHER_OK, buf, sizeof buf);
    inproc_close(same_root, 3000);

    tether_client *f = inproc_connect(fresh, 0);
    call_expect(f, "get_account_info", "{}", TETHER_OK, buf, sizeof buf);
    inproc_close(f, 3000);
}

/* Close during the start (GomuksStart cannot be interrupted): as over the websocket, CLOSED
 * comes at once with no DISCONNECTED, and the request made meanwhile gets
 * TETHER_ERR_CLIENT_CLOSED. The backend is stopped once its start returned, so until then the
 * process slot and the root stay taken: a new client gets TETHER_ERR_IN_USE for a while (an app
 * retries), then starts. */
static void test_close_during_start(void) {
    char root[512];
    inproc_root("closed-early", root, sizeof root); /* fresh: its start migrates a new database */
    tether_client *c = inproc_client(root);
    CHECK_OK(tether_client_connect(c));
    int64_t id = request(c, "get_state", "{}");
    int64_t t0 = th_now_ms();
    CHECK_OK(tether_client_close(c));
    tether_event *ev = next_event(c, 5000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CONNECTING);
    tether_event_free(ev);
    ev = next_event(c, 5000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_RESPONSE && tether_event_request_id(ev) == id);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CLIENT_CLOSED);
    tether_event_free(ev);
    ev = next_event(c, 5000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CLOSED);
    tether_event_free(ev);
    int64_t closed = th_now_ms() - t0;
    CHECK(closed < 1000 * th_scale());
    tether_client_free(c);

    int refused = 0;
    tether_status s;
    for (;;) {
        c = inproc_client(root);
        s = tether_client_connect(c);
        if (s != TETHER_ERR_IN_USE) break;
        tether_client_free(c);
        refused++;
        if (th_now_ms() - t0 > 10000 * th_scale()) th_fail(__FILE__, __LINE__, "slot never released");
        usleep(5000);
    }
    CHECK_OK(s);
    CHECK(refused >= 1);
    fprintf(stderr, "     CLOSED %lld ms after close; IN_USE for %lld ms more (%d refusals)\n",
            (long long)closed, (long long)(th_now_ms() - t0 - closed), refused);
    inproc_expect_connect(c, 0);
    inproc_close(c, 3000);
}

/* Callback delivery: the same events (CONNECTING, CONNECTED, client_state, sync_status, the
 * RESPONSE) on the dispatcher thread, then DISCONNECTED (OK) and CLOSED last, destroy once. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    uint32_t kind[64];
    char command[64][32];
    int64_t request_id[64];
    tether_status status[64];
    int destroyed;
} cb_log;

static void cb_event(void *ctx, const tether_event *ev) {
    cb_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    if (l->n < 64) {
        l->kind[l->n] = tether_event_kind(ev);
        snprintf(l->command[l->n], sizeof l->command[0], "%s", tether_event_command(ev));
        l->request_id[l->n] = tether_event_request_id(ev);
        l->status[l->n] = tether_event_status(ev);
        l->n++;
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void cb_destroy(void *ctx) {
    cb_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    l->destroyed++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* Waits until an event of `kind` (with request id `id`, if not 0) was logged; its index. */
static int cb_wait(cb_log *l, uint32_t kind, int64_t id, int ms) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        for (int i = 0; i < l->n; i++) {
            if (l->kind[i] == kind && (id == 0 || l->request_id[i] == id)) {
                pthread_mutex_unlock(&l->mu);
                return i;
            }
        }
        if (th_now_ms() > deadline) {
            pthread_mutex_unlock(&l->mu);
            th_fail(__FILE__, __LINE__, "no callback for kind %u in time", kind);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
}

static void test_callback_mode(void) {
    static cb_log l = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, {{0}}, {0}, {0}, 0};
    char root[512];
    tether_client *c = inproc_client(inproc_root("a", root, sizeof root));
    CHECK_OK(tether_client_set_event_callback(c, cb_event, &l, cb_destroy));
    CHECK_OK(tether_client_connect(c));
    int64_t id = request(c, "get_state", "{}");
    int resp = cb_wait(&l, TETHER_EVENT_RESPONSE, id, 15000);
    CHECK_OK(tether_client_close(c));
    int closed = cb_wait(&l, TETHER_EVENT_CLOSED, 0, 5000);
    pthread_mutex_lock(&l.mu);
    int64_t deadline = th_now_ms() + 5000;
    while (!l.destroyed && th_now_ms() < deadline) {
        pthread_mutex_unlock(&l.mu);
        usleep(10000);
        pthread_mutex_lock(&l.mu);
    }
    CHECK(l.destroyed == 1);
    CHECK(l.n >= 6 && closed == l.n - 1);
    CHECK(l.kind[0] == TETHER_EVENT_CONNECTING && l.kind[1] == TETHER_EVENT_CONNECTED);
    CHECK(l.kind[2] == TETHER_EVENT_MESSAGE && strcmp(l.command[2], "client_state") == 0);
    CHECK(l.kind[3] == TETHER_EVENT_MESSAGE && strcmp(l.command[3], "sync_status") == 0);
    CHECK(l.request_id[2] == 0 && l.request_id[3] == 0);
    CHECK(resp > 3 && l.status[resp] == TETHER_OK);
    CHECK(l.kind[closed - 1] == TETHER_EVENT_DISCONNECTED && l.status[closed - 1] == TETHER_OK);
    for (int i = 4; i < closed - 1; i++) {
        CHECK(i == resp || (l.kind[i] == TETHER_EVENT_MESSAGE && strcmp(l.command[i], "client_state") == 0));
    }
    pthread_mutex_unlock(&l.mu);
    tether_client_free(c);
}

/* Closing while a call blocks the backend (child: see child_busy_close). */
static void test_close_while_a_call_blocks(void) {
    char root[512];
    int st = wait_child(spawn_self("--child-busy-close", inproc_root("busy", root, sizeof root), NULL),
                        60000);
    CHECK(exit_code(st) == 0);
}

/* upload_media with bytes on a backend that is not logged in (§12.2 GomuksUploadMediaBytes):
 * the pinned gomuks would dereference the nil homeserver URL in mautrix's UploadMedia, and the
 * Go panic would abort the host process (FINDINGS I7). tether refuses it (and
 * calculate_room_id, the other account command that panics) with TETHER_ERR_STATE while
 * client_state says not logged in. Run in a child, so a regression cannot take the suite down
 * with it. */
static void test_account_commands_refused_without_account(void) {
    char root[512], err[600];
    inproc_root("upload", root, sizeof root);
    snprintf(err, sizeof err, "%s.stderr", root);
    int st = wait_child(spawn_self("--child-upload", root, err), 60000);
    static char text[1 << 16];
    FILE *f = fopen(err, "r");
    CHECK(f != NULL);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    if (exit_code(st) != 0)
        th_fail(__FILE__, __LINE__, "child failed (status %#x): %.2000s", st, text);
    CHECK_HAS(text, "child: upload requested\n");
    CHECK_HAS(text, "child: RESPONSE upload not valid in the client's current state");
    CHECK_HAS(text, "child: RESPONSE calculate_room_id not valid in the client's current state");
    CHECK(strstr(text, "child: PROGRESS") == NULL);
    CHECK(strstr(text, "panic:") == NULL);
}

int main(int argc, char **argv) {
    inproc_stdout_to_log();
    if (argc == 3 && strcmp(argv[1], "--child-connect") == 0) child_connect(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--child-upload") == 0) child_upload(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--child-busy-close") == 0) child_busy_close(argv[2]);
    TH_RUN(test_start_events_and_early_requests);
    TH_RUN(test_requests_without_account);
    TH_RUN(test_timeout_and_cancel_while_backend_busy);
    TH_RUN(test_calls_that_do_not_apply);
    TH_RUN(test_in_use_close_and_restart);
    TH_RUN(test_close_during_start);
    TH_RUN(test_callback_mode);
    TH_RUN(test_close_while_a_call_blocks);
    TH_RUN(test_account_commands_refused_without_account);
    return 0;
}
