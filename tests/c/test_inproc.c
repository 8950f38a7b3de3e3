/*
 * The in-process transport (docs/protocol/gomuks-rpc.md §12) through the C API, against
 * tests/inproc/fake_gomuksffi.c, the deterministic double of libgomuksffi: run.sh builds it and
 * passes its path in TETHER_FAKE_GOMUKSFFI (libfakegomuksffi-nodownload.so is looked up beside
 * it). tests/inproc.rs covers the transport's behaviour from Rust; this file covers what the C
 * surface adds: tether_config_set_in_process, tether_client_upload_media/_download_media,
 * tether_event_progress, PROGRESS and CHUNK events through poll, the batch and the callback,
 * their statuses, and memory (run under ASan+UBSan and under valgrind by run.sh).
 *
 * A process runs one in-process backend at a time, so the checks run one after the other,
 * each on its own data root (a fresh directory under $TMPDIR, removed afterwards). Needs no
 * tether-backend.
 *
 * Under LeakSanitizer and valgrind every check that loads a library also checks the loader: it
 * lost an 8-byte box per library loaded (and per non-FFI library tried) until that was fixed.
 */
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>

static const char *fake_lib;           /* libfakegomuksffi.so */
static char fake_lib_nodownload[1024]; /* the variant without GomuksDownloadMediaPath */

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

/* The last error of the calling thread contains `what`. */
#define CHECK_ERROR_MENTIONS(what)                                                         \
    do {                                                                                   \
        if (strstr(tether_last_error(), (what)) == NULL)                                   \
            th_fail(__FILE__, __LINE__, "last error does not mention \"%s\"", (what));     \
    } while (0)

/* A fresh, empty data root. */
static void new_root(char *buf, size_t cap) {
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, cap, "%s/tether-c-inproc.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(buf) != NULL);
}

/* Removes a data root and the files in it (the double and tether create no subdirectories). */
static void remove_root(const char *root) {
    DIR *d = opendir(root);
    if (!d) return;
    struct dirent *e;
    char path[1200];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        CHECK(unlink(path) == 0);
    }
    closedir(d);
    CHECK(rmdir(root) == 0);
}

static void write_file(const char *root, const char *name, const char *content) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", root, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(content, f) >= 0);
    CHECK(fclose(f) == 0);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static tether_config *inproc_config(const char *lib, const char *root) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_in_process(cfg, lib, root));
    return cfg;
}

static tether_client *inproc_client(const char *lib, const char *root) {
    return th_client_from(inproc_config(lib, root));
}

static void expect_kind(tether_event *ev, uint32_t kind, int line) {
    if (tether_event_kind(ev) != kind)
        th_fail(__FILE__, line, "event of kind %u (%s), expected %u", tether_event_kind(ev),
                tether_event_command(ev), kind);
}

/* Takes the startup sequence of a started in-process client (§12.2/§12.3): CONNECTING and
 * CONNECTED (attempt 1, no resume), then the double's two startup events as MESSAGE events
 * with request id 0. */
static void take_startup(tether_client *c) {
    tether_event *ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_CONNECTING, __LINE__);
    CHECK(tether_event_attempt(ev) == 1 && !tether_event_resume_attempted(ev));
    CHECK(tether_event_progress(ev) == -1.0);
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_CONNECTED, __LINE__);
    CHECK(tether_event_attempt(ev) == 1 && !tether_event_resume_attempted(ev));
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_MESSAGE, __LINE__);
    CHECK(strcmp(tether_event_command(ev), "client_state") == 0);
    CHECK(tether_event_request_id(ev) == 0);
    CHECK(th_data_is(ev, "{\"is_logged_in\":true,\"is_verified\":true,"
                         "\"user_id\":\"@fake:localhost\",\"device_id\":\"FAKE\"}"));
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_MESSAGE, __LINE__);
    CHECK(strcmp(tether_event_command(ev), "sync_status") == 0);
    CHECK(tether_event_request_id(ev) == 0);
    CHECK(th_data_is(ev, "{\"type\":\"waiting\"}"));
    tether_event_free(ev);
}

static tether_client *started_client(const char *lib, const char *root) {
    tether_client *c = inproc_client(lib, root);
    CHECK_OK(tether_client_connect(c));
    take_startup(c);
    return c;
}

/* Closes, checks the in-process end (DISCONNECTED with status OK and no retry, then CLOSED,
 * nothing else), and frees. */
static void close_inproc(tether_client *c) {
    CHECK_OK(tether_client_close(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_CLOSED, __LINE__);
    tether_event_free(ev);
    ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_CLOSED);
    CHECK(ev == NULL);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_CLOSED);
    tether_client_free(c);
}

static int64_t echo(tether_client *c, const char *json) {
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)json, strlen(json), &id));
    tether_event *ev = th_wait_response(c, id, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(th_data_is(ev, json));
    tether_event_free(ev);
    return id;
}

static int data_contains(const tether_event *ev, const char *needle) {
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_OK(tether_event_data(ev, &p, &n));
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(p + i, needle, m) == 0) return 1;
    return 0;
}

/* Whether `n` bytes at `p` are bytes `offset`.. of the double's download pattern. */
static int is_pattern(const uint8_t *p, size_t n, size_t offset) {
    for (size_t k = 0; k < n; k++)
        if (p[k] != (uint8_t)((offset + k) % 251)) return 0;
    return 1;
}

static const uint8_t *u8(const char *s) { return (const uint8_t *)s; }

/* A string as a (pointer, length) payload. */
#define JS(s) u8(s), strlen(s)

/* ---------------------------------------------------------------------------------------- */
/* 1. C API misuse                                                                          */

/* tether_config_set_in_process refuses NULLs and changes nothing then: the config still
 * builds a client on the library and root set before (the root it locks is the first one;
 * the roots and library of the failed calls are never touched). Empty paths are
 * tether_client_new's TETHER_ERR_CONFIG. */
static void test_set_in_process_null_arguments_leave_config_unchanged(void) {
    char root[512], other[512], lock[600];
    new_root(root, sizeof root);
    new_root(other, sizeof other);
    remove_root(other); /* only its name: it must not come back */
    tether_config *cfg = inproc_config(fake_lib, root);
    CHECK_STATUS(tether_config_set_in_process(NULL, fake_lib, root), TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("config");
    CHECK_STATUS(tether_config_set_in_process(cfg, NULL, other), TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("library_path");
    CHECK_STATUS(tether_config_set_in_process(cfg, "/nonexistent/libgomuksffi.so", NULL),
                 TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("data_root");
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    take_startup(c);
    snprintf(lock, sizeof lock, "%s/tether.lock", root);
    CHECK(file_exists(lock));
    CHECK(!file_exists(other));
    echo(c, "{\"same\":true}");
    close_inproc(c);

    tether_client *sentinel = (tether_client *)&cfg;
    tether_client *out = sentinel;
    cfg = inproc_config("", root);
    CHECK_STATUS(tether_client_new(cfg, &out), TETHER_ERR_CONFIG);
    CHECK_ERROR_MENTIONS("library path is empty");
    CHECK(out == sentinel);
    tether_config_free(cfg);
    cfg = inproc_config(fake_lib, "");
    CHECK_STATUS(tether_client_new(cfg, &out), TETHER_ERR_CONFIG);
    CHECK_ERROR_MENTIONS("data root");
    CHECK(out == sentinel);
    tether_config_free(cfg);
    remove_root(root);
}

/* rwws has no in-process transport: tether_client_new refuses it, whatever else is valid. */
static void test_rwws_in_process_is_config_error(void) {
    tether_config *cfg = inproc_config(fake_lib, "/tmp/tether-c-inproc-never-created");
    CHECK_OK(tether_config_set_protocol(cfg, TETHER_PROTOCOL_RWWS));
    CHECK_OK(tether_config_set_token(cfg, "dGV0aGVyLXRlc3Qta2V5"));
    tether_client *sentinel = (tether_client *)&cfg;
    tether_client *c = sentinel;
    CHECK_STATUS(tether_client_new(cfg, &c), TETHER_ERR_CONFIG);
    CHECK_ERROR_MENTIONS("gomuks");
    CHECK(c == sentinel);
    tether_config_free(cfg);
    CHECK(!file_exists("/tmp/tether-c-inproc-never-created"));
}

/* The path of the libc this process runs with, from /proc/self/maps ("" if not found). */
static void libc_path(char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *p = strchr(line, '/');
        if (!p) continue;
        p[strcspn(p, "\n")] = 0;
        const char *base = strrchr(p, '/') + 1;
        if (strcmp(base, "libc.so.6") == 0) {
            snprintf(buf, cap, "%s", p);
            break;
        }
    }
    fclose(f);
}

/* A library that cannot be loaded, or loads but is not a gomuks FFI, is refused by
 * tether_client_connect with TETHER_ERR_CONFIG and a message naming the problem; the client
 * is left as it was and still closes (CLOSED) and frees; the slot and root stay free. */
static void expect_bad_library(const char *lib, const char *what) {
    char root[512];
    new_root(root, sizeof root);
    tether_client *c = inproc_client(lib, root);
    CHECK_STATUS(tether_client_connect(c), TETHER_ERR_CONFIG);
    if (strstr(tether_last_error(), what) == NULL)
        th_fail(__FILE__, __LINE__, "%s: last error does not mention \"%s\"", lib, what);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_IDLE);
    th_close_and_free(c);
    remove_root(root);
}

static void test_bad_library_is_config_error_at_connect(void) {
    expect_bad_library("/nonexistent/libgomuksffi.so", "/nonexistent/libgomuksffi.so");
    expect_bad_library("/bin/sh", "gomuks FFI");
    char libc[1024];
    libc_path(libc, sizeof libc);
    if (libc[0]) expect_bad_library(libc, "no GomuksInit");
    /* Nothing was taken: a good library connects now. */
    char root[512];
    new_root(root, sizeof root);
    tether_client *c = started_client(fake_lib, root);
    close_inproc(c);
    remove_root(root);
}

/* Media calls: NULL client and NULL params with a length are TETHER_ERR_NULL, params that are
 * not JSON TETHER_ERR_INVALID_UTF8, a websocket client TETHER_ERR_UNSUPPORTED; the id output
 * is left alone each time. tether_event_progress(NULL) is -1. */
static void test_media_calls_argument_errors(void) {
    const char *params = "{\"filename\":\"a.bin\"}";
    size_t plen = strlen(params);
    const uint8_t bytes[4] = {1, 2, 3, 4};
    int64_t id = 77;
    CHECK_STATUS(tether_client_upload_media(NULL, u8(params), plen, bytes, 4, 0, &id),
                 TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("client");
    CHECK_STATUS(tether_client_download_media(NULL, JS("{}"), 0, &id), TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("client");
    CHECK(id == 77);
    CHECK(tether_event_progress(NULL) == -1.0);

    char root[512];
    new_root(root, sizeof root);
    tether_client *c = started_client(fake_lib, root);
    CHECK_STATUS(tether_client_upload_media(c, NULL, 5, bytes, 4, 0, &id), TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("params");
    /* NULL bytes with a length is a mistake, not a path upload. */
    CHECK_STATUS(tether_client_upload_media(c, JS("{\"path\":\"/x\"}"), NULL, 4, 0, &id),
                 TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("bytes");
    CHECK_STATUS(tether_client_download_media(c, NULL, 5, 0, &id), TETHER_ERR_NULL);
    CHECK_ERROR_MENTIONS("params");
    CHECK_STATUS(tether_client_upload_media(c, JS("{nope"), bytes, 4, 0, &id),
                 TETHER_ERR_INVALID_UTF8);
    CHECK_ERROR_MENTIONS("JSON");
    CHECK_STATUS(tether_client_download_media(c, JS("mxc://x"), 0, &id),
                 TETHER_ERR_INVALID_UTF8);
    CHECK_ERROR_MENTIONS("JSON");
    CHECK(id == 77);
    /* Nothing of the refused calls reached the backend: the next event is this echo's. */
    int64_t echo_id = 0;
    CHECK_OK(tether_client_request(c, "echo", JS("[]"), &echo_id));
    tether_event *ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_RESPONSE, __LINE__);
    CHECK(tether_event_request_id(ev) == echo_id);
    tether_event_free(ev);
    close_inproc(c);
    remove_root(root);

    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, "ws://127.0.0.1:9/"));
    tether_client *ws = th_client_from(cfg);
    CHECK_STATUS(tether_client_upload_media(ws, u8(params), plen, bytes, 4, 0, &id),
                 TETHER_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS("in-process");
    CHECK_STATUS(tether_client_upload_media(ws, JS("{\"path\":\"/etc/hostname\"}"), NULL, 0,
                                            1000, &id),
                 TETHER_ERR_UNSUPPORTED);
    CHECK_STATUS(tether_client_download_media(ws, JS("{\"mxc\":\"mxc://fake/1\"}"), 0, &id),
                 TETHER_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS("in-process");
    CHECK(id == 77);
    tether_client_free(ws);
}

/* pause, unpause and reconnect_now have no meaning in-process: TETHER_ERR_UNSUPPORTED, and the
 * client goes on; send_packet is gomuks's usual TETHER_ERR_STATE. After close every call that
 * needs an open client is TETHER_ERR_STATE. */
static void test_connection_calls_unsupported_and_calls_after_close(void) {
    char root[512];
    new_root(root, sizeof root);
    tether_client *c = inproc_client(fake_lib, root);
    /* Before connect too. */
    CHECK_STATUS(tether_client_pause(c), TETHER_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS("in-process");
    CHECK_OK(tether_client_connect(c));
    take_startup(c);
    CHECK_STATUS(tether_client_pause(c), TETHER_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS("pause");
    CHECK_STATUS(tether_client_unpause(c), TETHER_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS("unpause");
    CHECK_STATUS(tether_client_reconnect_now(c), TETHER_ERR_UNSUPPORTED);
    CHECK_ERROR_MENTIONS("reconnect_now");
    CHECK_STATUS(tether_client_send_packet(c, JS("x")), TETHER_ERR_STATE);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_CONNECTED);
    int64_t last = echo(c, "{\"still\":\"here\"}");

    CHECK_OK(tether_client_close(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    int64_t id = 77;
    CHECK_STATUS(tether_client_request(c, "echo", NULL, 0, &id), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_request_with_timeout(c, "echo", NULL, 0, 100, &id),
                 TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_upload_media(c, JS("{}"), JS("x"), 0, &id), TETHER_ERR_STATE);
    CHECK_ERROR_MENTIONS("closed");
    CHECK_STATUS(tether_client_upload_media(c, JS("{\"path\":\"/x\"}"), NULL, 0, 0, &id),
                 TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_download_media(c, JS("{}"), 0, &id), TETHER_ERR_STATE);
    CHECK_ERROR_MENTIONS("closed");
    CHECK(id == 77);
    CHECK_STATUS(tether_client_cancel(c, last), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_pause(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_unpause(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_reconnect_now(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_connect(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_close(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_close_keep_resume(c), TETHER_ERR_STATE);
    tether_event *ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_CLOSED);
    tether_client_free(c);
    remove_root(root);
}

/* ---------------------------------------------------------------------------------------- */
/* 2. Poll mode                                                                             */

/* Takes the events up to request `id`'s RESPONSE (returned, owned); every event before it
 * must be a PROGRESS of `id` with the values 0, 50, 100 in order (§12.2 upload callbacks). */
static tether_event *expect_upload_progress(tether_client *c, int64_t id) {
    static const char *const want_data[] = {"0", "50", "100"};
    static const double want[] = {0.0, 50.0, 100.0};
    for (int i = 0;; i++) {
        tether_event *ev = th_next(c, 10000);
        if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE) {
            CHECK(i == 3);
            CHECK(tether_event_request_id(ev) == id);
            CHECK(tether_event_progress(ev) == -1.0);
            return ev;
        }
        expect_kind(ev, TETHER_EVENT_PROGRESS, __LINE__);
        CHECK(i < 3);
        CHECK(tether_event_request_id(ev) == id);
        CHECK(tether_event_progress(ev) == want[i]);
        CHECK(th_data_is(ev, want_data[i]));
        CHECK_STATUS(tether_event_status(ev), TETHER_OK);
        CHECK(strcmp(tether_event_command(ev), "") == 0);
        CHECK(tether_event_retry_in_ms(ev) == -1 && tether_event_attempt(ev) == 0);
        tether_event_free(ev);
    }
}

/* §12.2/§12.3 through poll: the startup sequence and state, a request, uploads from bytes
 * and from a path with PROGRESS then RESPONSE, a streamed download in CHUNK events, and a
 * library without streaming download answering TETHER_ERR_UNSUPPORTED. */
static void test_spec12_poll_mode_requests_upload_download(void) {
    char root[512], path[600], params[700];
    new_root(root, sizeof root);
    tether_client *c = inproc_client(fake_lib, root);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_IDLE);
    CHECK_OK(tether_client_connect(c));
    take_startup(c);
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_CONNECTED);
    tether_stats st;
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.connect_attempts == 1 && st.connections == 1);
    echo(c, "{\"a\":[1,2]}");

    /* Upload from bytes (timeout 0: the configured one). */
    uint8_t bytes[1000];
    memset(bytes, 7, sizeof bytes);
    const char *up = "{\"filename\":\"a.bin\"}";
    int64_t id = 0;
    CHECK_OK(tether_client_upload_media(c, u8(up), strlen(up), bytes, sizeof bytes, 0, &id));
    CHECK(id > 0);
    tether_event *ev = expect_upload_progress(c, id);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(th_data_is(ev, "{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/1000\",\"info\":{\"size\":1000}}"));
    tether_event_free(ev);

    /* Upload from a path (bytes NULL), with its own timeout. */
    write_file(root, "upload.txt", "hello");
    snprintf(path, sizeof path, "%s/upload.txt", root);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    int64_t id2 = 0;
    CHECK_OK(tether_client_upload_media(c, u8(params), strlen(params), NULL, 0, 10000, &id2));
    CHECK(id2 > id);
    ev = expect_upload_progress(c, id2);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(data_contains(ev, "\"url\":\"mxc://fake/5\""));
    tether_event_free(ev);

    /* A path the backend cannot open: its error text, and no PROGRESS. */
    snprintf(params, sizeof params, "{\"path\":\"%s/missing\"}", root);
    CHECK_OK(tether_client_upload_media(c, u8(params), strlen(params), NULL, 0, 0, &id));
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_RESPONSE, __LINE__);
    CHECK(tether_event_request_id(ev) == id);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_REMOTE);
    CHECK(data_contains(ev, "no such file or directory"));
    tether_event_free(ev);

    /* Streamed download: CHUNK events in order, then the RESPONSE. */
    const char *dl = "{\"mxc\":\"mxc://fake/200000\"}";
    CHECK_OK(tether_client_download_media(c, u8(dl), strlen(dl), 0, &id));
    size_t got = 0;
    int chunks = 0;
    for (;;) {
        ev = th_next(c, 10000);
        CHECK(tether_event_request_id(ev) == id);
        if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE) break;
        expect_kind(ev, TETHER_EVENT_CHUNK, __LINE__);
        CHECK(tether_event_progress(ev) == -1.0);
        CHECK_STATUS(tether_event_status(ev), TETHER_OK);
        const uint8_t *p = NULL;
        size_t n = 0;
        CHECK_OK(tether_event_data(ev, &p, &n));
        CHECK(n > 0 && n <= 65536 && got + n <= 200000);
        CHECK(is_pattern(p, n, got));
        got += n;
        chunks++;
        tether_event_free(ev);
    }
    CHECK(got == 200000 && chunks == 4);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(th_data_is(ev, "{\"path\":\"/fake/200000\",\"size\":200000}"));
    tether_event_free(ev);
    close_inproc(c);

    /* gomuks v0.2607.0 has no GomuksDownloadMediaPath: the download's RESPONSE says so. */
    c = started_client(fake_lib_nodownload, root);
    CHECK_OK(tether_client_download_media(c, JS("{\"mxc\":\"mxc://fake/10\"}"), 0, &id));
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_RESPONSE, __LINE__);
    CHECK(tether_event_request_id(ev) == id);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_UNSUPPORTED);
    CHECK(data_contains(ev, "GomuksDownloadMediaPath"));
    tether_event_free(ev);
    echo(c, "{}"); /* the client goes on */
    close_inproc(c);
    remove_root(root);
}

/* ---------------------------------------------------------------------------------------- */
/* 3. The batch path                                                                        */

/* PROGRESS and CHUNK through tether_client_poll_batch: kinds, ids and data in the buffer
 * (the data of PROGRESS is the number as JSON), the fields that do not apply at their
 * defaults, and an upload and a download running at once kept apart. */
static void test_spec12_batch_carries_progress_and_chunks(void) {
    char root[512];
    new_root(root, sizeof root);
    tether_client *c = inproc_client(fake_lib, root);
    tether_batch *b = NULL;
    CHECK_OK(tether_batch_new(8, &b)); /* small: the 150 000 bytes take several batches */
    CHECK_OK(tether_client_connect(c));
    int64_t up = 0, down = 0;
    CHECK_OK(tether_client_upload_media(c, JS("{\"filename\":\"b\"}"), JS("abc"), 0, &up));
    CHECK_OK(tether_client_download_media(c, JS("{\"mxc\":\"mxc://fake/150000\"}"), 0,
                                          &down));
    static const char *const want_progress[] = {"0", "50", "100"};
    uint32_t startup[4];
    int n_startup = 0, n_progress = 0, up_done = 0, down_done = 0, entries = 0;
    size_t got = 0;
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    while (!up_done || !down_done) {
        CHECK(th_now_ms() < deadline);
        size_t count = 0;
        tether_status s = tether_client_poll_batch(c, 200, b, &count);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        const tether_batch_entry *e = NULL;
        const uint8_t *buf = NULL;
        size_t n = 0, len = 0;
        CHECK_OK(tether_batch_view(b, &e, &n, &buf, &len));
        CHECK(n == count && n >= 1 && n <= 8);
        for (size_t i = 0; i < n; i++, entries++) {
            CHECK(e[i].data_offset + e[i].data_len <= len);
            const uint8_t *data = buf + e[i].data_offset;
            switch (e[i].kind) {
            case TETHER_EVENT_CONNECTING:
            case TETHER_EVENT_CONNECTED:
            case TETHER_EVENT_MESSAGE:
                CHECK(n_startup < 4);
                startup[n_startup++] = e[i].kind;
                break;
            case TETHER_EVENT_PROGRESS:
                CHECK(e[i].request_id == up && n_progress < 3 && !up_done);
                CHECK(e[i].data_len == strlen(want_progress[n_progress]));
                CHECK(memcmp(data, want_progress[n_progress], e[i].data_len) == 0);
                CHECK(e[i].status == TETHER_OK && e[i].command_len == 0 && e[i].attempt == 0);
                CHECK(e[i].rtt_us == -1 && e[i].retry_in_ms == -1 && e[i].acked_id == 0);
                n_progress++;
                break;
            case TETHER_EVENT_CHUNK:
                CHECK(e[i].request_id == down && !down_done);
                CHECK(e[i].data_len > 0 && got + e[i].data_len <= 150000);
                CHECK(is_pattern(data, e[i].data_len, got));
                CHECK(e[i].status == TETHER_OK && e[i].command_len == 0);
                CHECK(e[i].rtt_us == -1 && e[i].retry_in_ms == -1);
                got += e[i].data_len;
                break;
            case TETHER_EVENT_RESPONSE:
                CHECK(e[i].status == TETHER_OK);
                if (e[i].request_id == up) {
                    CHECK(n_progress == 3);
                    up_done = 1;
                } else {
                    CHECK(e[i].request_id == down && got == 150000);
                    static const char want[] = "{\"path\":\"/fake/150000\",\"size\":150000}";
                    CHECK(e[i].data_len == strlen(want) && memcmp(data, want, e[i].data_len) == 0);
                    down_done = 1;
                }
                break;
            default:
                th_fail(__FILE__, __LINE__, "unexpected entry of kind %u", e[i].kind);
            }
        }
    }
    CHECK(n_startup == 4 && startup[0] == TETHER_EVENT_CONNECTING &&
          startup[1] == TETHER_EVENT_CONNECTED && startup[2] == TETHER_EVENT_MESSAGE &&
          startup[3] == TETHER_EVENT_MESSAGE);
    CHECK(entries >= 4 + 3 + 3 + 2);

    /* Close through the batch too: CLOSED is the last entry, then TETHER_CLOSED. */
    CHECK_OK(tether_client_close(c));
    int closed = 0;
    while (!closed) {
        CHECK(th_now_ms() < deadline + 10000 * th_scale());
        size_t count = 0;
        tether_status s = tether_client_poll_batch(c, 200, b, &count);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        const tether_batch_entry *e = NULL;
        const uint8_t *buf = NULL;
        size_t n = 0, len = 0;
        CHECK_OK(tether_batch_view(b, &e, &n, &buf, &len));
        for (size_t i = 0; i < n; i++) {
            if (e[i].kind == TETHER_EVENT_CLOSED) {
                CHECK(i == n - 1);
                closed = 1;
            } else {
                CHECK(e[i].kind == TETHER_EVENT_DISCONNECTED && e[i].status == TETHER_OK &&
                      e[i].retry_in_ms == -1);
            }
        }
    }
    size_t count = 5;
    CHECK_STATUS(tether_client_poll_batch(c, 0, b, &count), TETHER_CLOSED);
    tether_batch_free(b);
    tether_client_free(c);
    remove_root(root);
}

/* ---------------------------------------------------------------------------------------- */
/* 4. Callback mode                                                                         */

typedef struct {
    pthread_mutex_t mu;
    tether_client *client;
    pthread_t main_thread;
    int wrong_thread;
    uint32_t kinds[16];
    int n_kinds;
    int messages;
    int64_t echo_id, upload_id;
    int echo_ok, upload_ok;
    double progress[4];
    int n_progress;
    int closed;
    int destroyed;
    int after_destroy;
} cb_state;

static void cb_on_event(void *ctx, const tether_event *ev) {
    cb_state *s = (cb_state *)ctx;
    pthread_mutex_lock(&s->mu);
    if (pthread_equal(pthread_self(), s->main_thread)) s->wrong_thread++;
    if (s->destroyed) s->after_destroy++;
    uint32_t kind = tether_event_kind(ev);
    if (s->n_kinds < 16) s->kinds[s->n_kinds++] = kind;
    int64_t rid = tether_event_request_id(ev);
    switch (kind) {
    case TETHER_EVENT_MESSAGE:
        /* After the second startup event: a request and an upload from inside the callback. */
        if (++s->messages == 2 && strcmp(tether_event_command(ev), "sync_status") == 0) {
            CHECK_OK(tether_client_request(s->client, "echo", JS("{\"cb\":1}"), &s->echo_id));
            CHECK_OK(tether_client_upload_media(s->client, JS("{\"filename\":\"c\"}"),
                                                JS("12345678"), 0, &s->upload_id));
        }
        break;
    case TETHER_EVENT_PROGRESS:
        if (rid == s->upload_id && s->n_progress < 4)
            s->progress[s->n_progress++] = tether_event_progress(ev);
        break;
    case TETHER_EVENT_RESPONSE:
        if (rid == s->echo_id)
            s->echo_ok = tether_event_status(ev) == TETHER_OK && th_data_is(ev, "{\"cb\":1}");
        else if (rid == s->upload_id)
            s->upload_ok = tether_event_status(ev) == TETHER_OK &&
                           data_contains(ev, "mxc://fake/8") && tether_event_progress(ev) == -1.0;
        break;
    case TETHER_EVENT_CLOSED:
        s->closed++;
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&s->mu);
}

static void cb_on_destroy(void *ctx) {
    cb_state *s = (cb_state *)ctx;
    pthread_mutex_lock(&s->mu);
    s->destroyed++;
    pthread_mutex_unlock(&s->mu);
}

static void cb_wait(cb_state *s, const int *flag) {
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int v = *flag;
        pthread_mutex_unlock(&s->mu);
        if (v) return;
        CHECK(th_now_ms() < deadline);
        usleep(2000);
    }
}

/* The startup events and the answers to a request and an upload (with its PROGRESS) made
 * inside the callback all arrive on the dispatcher thread; close from the main thread ends
 * with CLOSED, destroy runs once after it, and free from the main thread afterwards calls
 * nothing more. */
static void test_spec12_3_callback_mode(void) {
    char root[512];
    new_root(root, sizeof root);
    cb_state s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    s.main_thread = pthread_self();
    s.client = inproc_client(fake_lib, root);
    CHECK_OK(tether_client_set_event_callback(s.client, cb_on_event, &s, cb_on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    cb_wait(&s, &s.echo_ok);
    cb_wait(&s, &s.upload_ok);
    CHECK_OK(tether_client_close(s.client));
    cb_wait(&s, &s.destroyed);
    pthread_mutex_lock(&s.mu);
    CHECK(s.kinds[0] == TETHER_EVENT_CONNECTING && s.kinds[1] == TETHER_EVENT_CONNECTED &&
          s.kinds[2] == TETHER_EVENT_MESSAGE && s.kinds[3] == TETHER_EVENT_MESSAGE);
    CHECK(s.n_kinds == 4 + 3 + 2 + 2); /* startup, 3 PROGRESS, 2 RESPONSE, DISCONNECTED+CLOSED */
    CHECK(s.kinds[s.n_kinds - 2] == TETHER_EVENT_DISCONNECTED);
    CHECK(s.kinds[s.n_kinds - 1] == TETHER_EVENT_CLOSED);
    CHECK(s.n_progress == 3 && s.progress[0] == 0.0 && s.progress[1] == 50.0 &&
          s.progress[2] == 100.0);
    CHECK(s.closed == 1 && s.destroyed == 1 && s.wrong_thread == 0);
    pthread_mutex_unlock(&s.mu);
    tether_event *ev = NULL;
    CHECK_STATUS(tether_client_poll(s.client, 0, &ev), TETHER_ERR_WRONG_MODE);
    tether_client_free(s.client);
    usleep(20000);
    pthread_mutex_lock(&s.mu);
    CHECK(s.destroyed == 1 && s.after_destroy == 0);
    pthread_mutex_unlock(&s.mu);
    pthread_mutex_destroy(&s.mu);
    remove_root(root);
}

/* ---------------------------------------------------------------------------------------- */
/* 5. Timeout and cancel                                                                    */

/* §12.3: the FFI's calls block and cannot be cancelled, yet a timeout and a cancel answer at
 * once; the backend's late replies never surface. */
static void test_spec12_3_timeout_and_cancel_answer_at_once(void) {
    char root[512];
    new_root(root, sizeof root);
    tether_client *c = started_client(fake_lib, root);
    int64_t t0 = th_now_ms();
    int64_t timed = 0, cancelled = 0;
    CHECK_OK(tether_client_request_with_timeout(c, "sleep", JS("{\"ms\":1500}"), 200, &timed));
    CHECK_OK(tether_client_request(c, "sleep", JS("{\"ms\":1500}"), &cancelled));
    CHECK_OK(tether_client_cancel(c, cancelled));
    int got_timed = 0, got_cancelled = 0;
    for (int i = 0; i < 2; i++) {
        tether_event *ev = th_next(c, 5000);
        expect_kind(ev, TETHER_EVENT_RESPONSE, __LINE__);
        int64_t rid = tether_event_request_id(ev);
        if (rid == cancelled) {
            CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CANCELLED);
            got_cancelled++;
        } else {
            CHECK(rid == timed);
            CHECK_STATUS(tether_event_status(ev), TETHER_ERR_REQUEST_TIMEOUT);
            got_timed++;
        }
        tether_event_free(ev);
    }
    CHECK(got_timed == 1 && got_cancelled == 1);
    int64_t took = th_now_ms() - t0;
    if (took >= (th_scale() > 1 ? 1400 : 1000))
        th_fail(__FILE__, __LINE__, "the timeout took %lld ms", (long long)took);
    tether_stats st;
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.requests_timed_out == 1);
    /* Both sleeps end meanwhile; nothing of them may follow. */
    int64_t until = t0 + 1800 + (th_scale() > 1 ? 1500 : 0);
    tether_event *ev = NULL;
    while (th_now_ms() < until) {
        ev = NULL;
        tether_status s = tether_client_poll(c, (int)(until - th_now_ms()) + 1, &ev);
        if (s == TETHER_TIMEOUT) continue;
        th_fail(__FILE__, __LINE__, "late event of kind %u, request %lld", tether_event_kind(ev),
                (long long)tether_event_request_id(ev));
    }
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", NULL, 0, &id));
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_RESPONSE, __LINE__);
    CHECK(tether_event_request_id(ev) == id && th_data_is(ev, "{}"));
    tether_event_free(ev);
    close_inproc(c);
    remove_root(root);
}

/* ---------------------------------------------------------------------------------------- */
/* 6. Start failure                                                                         */

/* §12.2: GomuksStart returning 10 ends the client with DISCONNECTED
 * (TETHER_ERR_BACKEND_DATABASE, no retry) and CLOSED without the app closing; a request
 * that waited for the start gets TETHER_ERR_CLIENT_CLOSED in between, whose text gives the
 * start's error; the root is free again. The start fails only after 300 ms, so the request
 * surely waits for it (a start failing at once may end the client before the request). */
static void test_spec12_2_start_failure_database(void) {
    char root[512];
    new_root(root, sizeof root);
    write_file(root, "fake_start_code", "10");
    write_file(root, "fake_start_delay_ms", "300");
    tether_client *c = inproc_client(fake_lib, root);
    CHECK_OK(tether_client_connect(c));
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", NULL, 0, &id));
    tether_event *ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_CONNECTING, __LINE__);
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_DISCONNECTED, __LINE__);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_BACKEND_DATABASE);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    CHECK(tether_event_attempt(ev) == 1);
    CHECK(data_contains(ev, "GomuksStart returned 10"));
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_RESPONSE, __LINE__);
    CHECK(tether_event_request_id(ev) == id);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CLIENT_CLOSED);
    CHECK(data_contains(ev, "stopped for good") && data_contains(ev, "GomuksStart returned 10"));
    tether_event_free(ev);
    ev = th_next(c, 10000);
    expect_kind(ev, TETHER_EVENT_CLOSED, __LINE__);
    tether_event_free(ev);
    ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_CLOSED);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_CLOSED);
    CHECK_STATUS(tether_client_request(c, "echo", NULL, 0, &id), TETHER_ERR_STATE);
    tether_client_free(c);
    /* The failed backend holds nothing. */
    char file[600];
    snprintf(file, sizeof file, "%s/fake_start_code", root);
    CHECK(unlink(file) == 0);
    snprintf(file, sizeof file, "%s/fake_start_delay_ms", root);
    CHECK(unlink(file) == 0);
    c = started_client(fake_lib, root);
    close_inproc(c);
    remove_root(root);
}

/* ---------------------------------------------------------------------------------------- */
/* 7. Two clients                                                                           */

/* One backend per data root and per process (§12.3: the FFI's callbacks carry no context): a
 * second client (same root, or another) is refused by tether_client_connect with
 * TETHER_ERR_IN_USE and left as it was; once the first is closed and freed it connects. */
static void test_spec12_3_second_client_in_use_until_first_freed(void) {
    char root[512], other[512];
    new_root(root, sizeof root);
    new_root(other, sizeof other);
    tether_client *first = started_client(fake_lib, root);
    tether_client *second = inproc_client(fake_lib, root);
    CHECK_STATUS(tether_client_connect(second), TETHER_ERR_IN_USE);
    CHECK_ERROR_MENTIONS("already runs");
    tether_client *third = inproc_client(fake_lib, other);
    CHECK_STATUS(tether_client_connect(third), TETHER_ERR_IN_USE);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(second, &state));
    CHECK(state == TETHER_STATE_IDLE);
    tether_event *ev = NULL;
    CHECK_STATUS(tether_client_poll(second, 0, &ev), TETHER_TIMEOUT);
    echo(first, "{\"first\":1}"); /* undisturbed */
    close_inproc(first);
    CHECK_OK(tether_client_connect(second));
    take_startup(second);
    echo(second, "{\"second\":2}");
    close_inproc(second);
    CHECK_OK(tether_client_connect(third));
    take_startup(third);
    close_inproc(third);
    remove_root(root);
    remove_root(other);
}

/* ---------------------------------------------------------------------------------------- */
/* 8. Free without close                                                                    */

/* Connects a new client on `root`, retrying while the previous one's background stop still
 * holds it (TETHER_ERR_IN_USE), for a bounded time. */
static tether_client *connect_when_free(const char *root) {
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (int tries = 1;; tries++) {
        tether_client *c = inproc_client(fake_lib, root);
        tether_status s = tether_client_connect(c);
        if (s == TETHER_OK) return c;
        CHECK_STATUS(s, TETHER_ERR_IN_USE);
        tether_client_free(c);
        if (th_now_ms() > deadline)
            th_fail(__FILE__, __LINE__, "root still in use after %d tries", tries);
        usleep(50000);
    }
}

/* tether_client_free on a running client with a blocking call in flight (a 500 ms sleep),
 * an upload just queued and undelivered events: no crash, no leak (valgrind), and the
 * backend stops in the background, after which the root serves a new client. */
static void test_free_without_close_with_requests_in_flight(void) {
    char root[512];
    new_root(root, sizeof root);
    tether_client *c = started_client(fake_lib, root);
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "sleep", JS("{\"ms\":500}"), &id));
    CHECK_OK(tether_client_request(c, "emit", JS("{\"count\":50,\"command\":\"x\"}"), &id));
    CHECK_OK(tether_client_upload_media(c, JS("{\"filename\":\"d\"}"), JS("xyz"), 0, &id));
    /* Free once the three calls were handed to the backend (the sleep then runs for 500 ms). */
    int64_t deadline = th_now_ms() + 5000 * th_scale();
    for (;;) {
        tether_stats st;
        st.size = sizeof st;
        CHECK_OK(tether_client_stats(c, &st));
        if (st.requests_sent == 3) break;
        CHECK(th_now_ms() < deadline);
        usleep(2000);
    }
    tether_client_free(c);
    c = connect_when_free(root);
    take_startup(c);
    echo(c, "{\"after\":\"free\"}");
    close_inproc(c);
    remove_root(root);
}

int main(void) {
    fake_lib = getenv("TETHER_FAKE_GOMUKSFFI");
    if (!fake_lib || !*fake_lib)
        th_fail(__FILE__, __LINE__, "TETHER_FAKE_GOMUKSFFI is not set (tests/inproc/build.sh)");
    const char *slash = strrchr(fake_lib, '/');
    int dir_len = slash ? (int)(slash - fake_lib + 1) : 0;
    snprintf(fake_lib_nodownload, sizeof fake_lib_nodownload, "%.*slibfakegomuksffi-nodownload.so",
             dir_len, fake_lib);
    CHECK(file_exists(fake_lib) && file_exists(fake_lib_nodownload));

    TH_RUN(test_set_in_process_null_arguments_leave_config_unchanged);
    TH_RUN(test_rwws_in_process_is_config_error);
    TH_RUN(test_bad_library_is_config_error_at_connect);
    TH_RUN(test_media_calls_argument_errors);
    TH_RUN(test_connection_calls_unsupported_and_calls_after_close);
    TH_RUN(test_spec12_poll_mode_requests_upload_download);
    TH_RUN(test_spec12_batch_carries_progress_and_chunks);
    TH_RUN(test_spec12_3_callback_mode);
    TH_RUN(test_spec12_3_timeout_and_cancel_answer_at_once);
    TH_RUN(test_spec12_2_start_failure_database);
    TH_RUN(test_spec12_3_second_client_in_use_until_first_freed);
    TH_RUN(test_free_without_close_with_requests_in_flight);
    return 0;
}
