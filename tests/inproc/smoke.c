/*
 * Smoke test of the fake gomuks FFI (fake_gomuksffi.c), linked directly (no dlopen). Run by
 * tests/inproc/build.sh --smoke under ASan+UBSan and under valgrind: every rule of the double
 * once, every buffer freed. Prints "smoke ok" and exits 0, or names the failed check and exits 1.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The ABI, declared here as in the double (layout of the pinned gomuksffi.h). */
typedef struct {
    const uint8_t *base;
    size_t length;
} GomuksBorrowedBuffer;
typedef struct {
    uint8_t *base;
    size_t length;
} GomuksOwnedBuffer;
typedef struct {
    GomuksOwnedBuffer buf;
    const char *command;
} GomuksResponse;
typedef uintptr_t GomuksHandle;
typedef void (*EventCallback)(const char *command, int64_t request_id, GomuksOwnedBuffer data);
typedef void (*ProgressCallback)(double progress);
typedef void (*StreamCallback)(GomuksBorrowedBuffer data);

GomuksHandle GomuksInit(char *root);
int GomuksStart(GomuksHandle handle, EventCallback callback);
void GomuksDestroy(GomuksHandle handle);
GomuksResponse GomuksSubmitCommand(GomuksHandle handle, char *command, GomuksBorrowedBuffer data);
GomuksResponse GomuksUploadMediaPath(GomuksHandle handle, GomuksBorrowedBuffer params,
                                     ProgressCallback cb);
GomuksResponse GomuksUploadMediaBytes(GomuksHandle handle, GomuksBorrowedBuffer params,
                                      GomuksBorrowedBuffer bytes, ProgressCallback cb);
GomuksResponse GomuksDownloadMediaPath(GomuksHandle handle, GomuksBorrowedBuffer params,
                                       StreamCallback cb);
void GomuksFreeBuffer(GomuksOwnedBuffer buf);

static int failures;
#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "smoke: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                     \
        }                                                                                   \
    } while (0)

static GomuksBorrowedBuffer str_buf(const char *s) {
    GomuksBorrowedBuffer b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

/* Checks command and data of a response, then frees it. */
static void expect(GomuksResponse r, const char *command, const char *json, int line) {
    int ok = r.command && strcmp(r.command, command) == 0 && r.buf.length == strlen(json) &&
             memcmp(r.buf.base, json, r.buf.length) == 0;
    if (!ok) {
        fprintf(stderr, "smoke: line %d: got %s %.*s, want %s %s\n", line, r.command ? r.command : "(null)",
                (int)r.buf.length, (const char *)r.buf.base, command, json);
        failures++;
    }
    GomuksFreeBuffer(r.buf);
}
#define EXPECT(r, command, json) expect((r), (command), (json), __LINE__)

static GomuksResponse submit(GomuksHandle h, const char *command, const char *data) {
    char name[64];
    snprintf(name, sizeof name, "%s", command);
    return GomuksSubmitCommand(h, name, str_buf(data));
}

/* ---- event callback state ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_t main_thread;
static int start_events, start_on_main, events_off_main, ticks, tick_order_ok = 1;
static int par_events, uni_events, flood_events, bad_events;

static void on_event(const char *command, int64_t request_id, GomuksOwnedBuffer data) {
    pthread_mutex_lock(&mu);
    int on_main = pthread_equal(pthread_self(), main_thread);
    if (request_id != 0) bad_events++;
    if (strcmp(command, "client_state") == 0 || strcmp(command, "sync_status") == 0) {
        const char *want = start_events == 0 ? "{\"is_logged_in\":true,\"is_verified\":true}"
                                             : "{\"type\":\"waiting\"}";
        if (data.length != strlen(want) || memcmp(data.base, want, data.length) != 0) bad_events++;
        start_events++;
        start_on_main += on_main;
    } else if (strcmp(command, "tick") == 0) {
        char want[32];
        snprintf(want, sizeof want, "{\"seq\":%d}", ticks);
        if (data.length != strlen(want) || memcmp(data.base, want, data.length) != 0) tick_order_ok = 0;
        ticks++;
        events_off_main += !on_main;
    } else if (strcmp(command, "par") == 0) {
        par_events++;
    } else if (strcmp(command, "\xe2\x82\xac\xf0\x9f\x98\x80/\"") == 0) { /* €😀/" */
        uni_events++;
    } else if (strcmp(command, "flood") == 0) {
        flood_events++;
    } else {
        bad_events++;
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    GomuksFreeBuffer(data);
}

static int wait_for(int *counter, int want) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (*counter < want && pthread_cond_timedwait(&cv, &mu, &dl) == 0) {
    }
    int got = *counter;
    pthread_mutex_unlock(&mu);
    return got >= want;
}

/* ---- progress and stream callbacks ---- */

static double progress[8];
static int progress_n, progress_off_main;

static void on_progress(double p) {
    if (progress_n < 8) progress[progress_n++] = p;
    progress_off_main += !pthread_equal(pthread_self(), main_thread);
}

static uint64_t dl_total, dl_chunks, dl_finals, dl_bad, dl_after_final;

static void on_chunk(GomuksBorrowedBuffer b) {
    if (b.base == NULL && b.length == 0) {
        dl_finals++;
        return;
    }
    if (dl_finals) dl_after_final++;
    if (b.length == 0 || b.length > 65536) dl_bad++;
    for (size_t i = 0; i < b.length; i++)
        if (b.base[i] != (uint8_t)((dl_total + i) % 251)) dl_bad++;
    dl_total += b.length;
    dl_chunks++;
}

/* ---- concurrent callers ---- */

typedef struct {
    GomuksHandle h;
    int ok;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    for (int i = 0; i < 50; i++) {
        char data[32];
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        GomuksResponse r = submit(w->h, "echo", data);
        w->ok += strcmp(r.command, "response") == 0 && r.buf.length == strlen(data) &&
                 memcmp(r.buf.base, data, r.buf.length) == 0;
        GomuksFreeBuffer(r.buf);
    }
    GomuksResponse r = submit(w->h, "emit", "{\"count\":10,\"command\":\"par\"}");
    w->ok += strcmp(r.command, "response") == 0;
    GomuksFreeBuffer(r.buf);
    return NULL;
}

typedef struct {
    GomuksHandle h;
    GomuksResponse r;
    double secs;
    int calling;
} sleeper;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *sleeper_main(void *arg) {
    sleeper *s = arg;
    double t0 = now_s();
    pthread_mutex_lock(&mu);
    s->calling = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    s->r = submit(s->h, "sleep", "{\"ms\":20000}");
    s->secs = now_s() - t0;
    return NULL;
}

/* ---- misuse aborts, checked in a child before any thread exists ---- */

static int aborts_in_child(void (*fn)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *null = freopen("/dev/null", "w", stderr);
        (void)null;
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void misuse_unknown_handle(void) {
    GomuksResponse r = submit(12345, "echo", "");
    GomuksFreeBuffer(r.buf);
}
static void misuse_before_start(void) {
    GomuksHandle h = GomuksInit(NULL);
    GomuksResponse r = submit(h, "echo", "");
    GomuksFreeBuffer(r.buf);
}
static void misuse_after_destroy(void) {
    GomuksHandle h = GomuksInit(NULL);
    GomuksDestroy(h);
    GomuksDestroy(h);
}

static void write_file(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "w");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int main(void) {
    main_thread = pthread_self();
    const char *tmp = getenv("TMPDIR");
    char root[512], path[600], code_file[600];
    snprintf(root, sizeof root, "%s/fakegomuks-smoke-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }

    CHECK(aborts_in_child(misuse_unknown_handle));
    CHECK(aborts_in_child(misuse_before_start));
    CHECK(aborts_in_child(misuse_after_destroy));

    /* Start failure via fake_start_code; destroy of a failed and of a never started handle. */
    snprintf(code_file, sizeof code_file, "%s/fake_start_code", root);
    write_file(code_file, "11\n", 3);
    GomuksHandle failed = GomuksInit(root);
    CHECK(GomuksStart(failed, on_event) == 11);
    CHECK(start_events == 0);
    GomuksDestroy(failed);
    unlink(code_file);
    GomuksDestroy(GomuksInit(root));

    GomuksHandle h = GomuksInit(root);
    CHECK(h != 0 && h != failed);
    CHECK(GomuksStart(h, on_event) == 0);
    CHECK(start_events == 2 && start_on_main == 2);

    EXPECT(submit(h, "echo", "{\"a\":[1,2]}"), "response", "{\"a\":[1,2]}");
    EXPECT(submit(h, "echo", NULL), "response", "{}");
    /* Data is bytes: only `length` counts, not a NUL. */
    EXPECT(GomuksSubmitCommand(h, (char *)"echo", (GomuksBorrowedBuffer){(const uint8_t *)"[1]xyz", 3}),
           "response", "[1]");
    EXPECT(submit(h, "no\"such\\", "{}"), "error", "\"unknown command \\\"no\\\"such\\\\\\\"\"");
    EXPECT(submit(h, "sleep", "{\"ms\": 5}"), "response", "{\"slept_ms\":5}");
    EXPECT(submit(h, "sleep", "{\"ms\":-5}"), "error", "\"invalid params\"");
    EXPECT(submit(h, "emit", "{\"count\":3}"), "error", "\"invalid params\"");
    /* JSON escapes in the event name: \u with a surrogate pair, \/ and \". */
    EXPECT(submit(h, "emit", "{\"command\": \"\\u20ac\\ud83d\\ude00\\/\\\"\", \"count\": 2}"), "response",
           "{\"queued\":2}");
    CHECK(wait_for(&uni_events, 2));
    EXPECT(submit(h, "get_account_info", ""), "response",
           "{\"user_id\":\"@fake:localhost\",\"device_id\":\"FAKE\",\"homeserver_url\":\"http://127.0.0.1:1\","
           "\"access_token\":\"fake-token\"}");

    EXPECT(submit(h, "emit", "{\"command\":\"tick\",\"count\":1000}"), "response", "{\"queued\":1000}");
    CHECK(wait_for(&ticks, 1000) && ticks == 1000);
    CHECK(tick_order_ok);
    CHECK(events_off_main == 1000);

    worker ws[4];
    pthread_t wt[4];
    for (int i = 0; i < 4; i++) {
        ws[i] = (worker){h, 0};
        pthread_create(&wt[i], NULL, worker_main, &ws[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(wt[i], NULL);
        CHECK(ws[i].ok == 51);
    }
    CHECK(wait_for(&par_events, 40));

    GomuksResponse st = submit(h, "fake_stats", "");
    unsigned long long emitted = 0, max_us = 0, callbacks = 0;
    CHECK(strcmp(st.command, "response") == 0);
    char stats[128];
    snprintf(stats, sizeof stats, "%.*s", (int)st.buf.length, (const char *)st.buf.base);
    CHECK(sscanf(stats, "{\"emitted\":%llu,\"max_callback_us\":%llu,\"callbacks\":%llu}", &emitted, &max_us,
                 &callbacks) == 3);
    CHECK(emitted == 1042 && callbacks == 1044);
    GomuksFreeBuffer(st.buf);

    /* Uploads. */
    static uint8_t media[12345];
    EXPECT(GomuksUploadMediaBytes(h, str_buf("{\"filename\":\"a.bin\"}"),
                                  (GomuksBorrowedBuffer){media, sizeof media}, on_progress),
           "response", "{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/12345\",\"info\":{\"size\":12345}}");
    CHECK(progress_n == 3 && progress[0] == 0 && progress[1] == 50 && progress[2] == 100);
    CHECK(progress_off_main == 3);
    progress_n = progress_off_main = 0;
    EXPECT(GomuksUploadMediaBytes(h, str_buf("{\"filename\":\"a.bin\",\"fail\":true}"),
                                  (GomuksBorrowedBuffer){media, 10}, on_progress),
           "error", "\"upload failed\"");
    CHECK(progress_n == 1 && progress[0] == 0);
    EXPECT(GomuksUploadMediaBytes(h, str_buf("{}"), (GomuksBorrowedBuffer){media, 7}, NULL), "response",
           "{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/7\",\"info\":{\"size\":7}}");

    snprintf(path, sizeof path, "%s/up.txt", root);
    write_file(path, "hello, fake", 11);
    char params[700];
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    progress_n = 0;
    EXPECT(GomuksUploadMediaPath(h, str_buf(params), on_progress), "response",
           "{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/11\",\"info\":{\"size\":11}}");
    CHECK(progress_n == 3);
    unlink(path);
    progress_n = 0;
    char want[700];
    snprintf(want, sizeof want, "\"open %s: no such file or directory\"", path);
    EXPECT(GomuksUploadMediaPath(h, str_buf(params), on_progress), "error", want);
    CHECK(progress_n == 0);
    EXPECT(GomuksUploadMediaPath(h, str_buf("{\"path\":1}"), on_progress), "error",
           "\"invalid params\"");

    /* Download. */
    EXPECT(GomuksDownloadMediaPath(h, str_buf("{\"mxc\":\"mxc://fake/200000\"}"), on_chunk), "response",
           "{\"path\":\"/fake/200000\",\"size\":200000}");
    CHECK(dl_total == 200000 && dl_chunks == 4 && dl_finals == 1 && dl_bad == 0 && dl_after_final == 0);
    dl_total = dl_chunks = dl_finals = 0;
    EXPECT(GomuksDownloadMediaPath(h, str_buf("{\"mxc\":\"mxc://fake/0\"}"), on_chunk), "response",
           "{\"path\":\"/fake/0\",\"size\":0}");
    CHECK(dl_total == 0 && dl_chunks == 0 && dl_finals == 1);
    dl_finals = 0;
    EXPECT(GomuksDownloadMediaPath(h, str_buf("{\"mxc\":\"mxc://fake/100000\",\"fail\":true}"), on_chunk),
           "error", "\"download failed\"");
    CHECK(dl_total == 65536 && dl_finals == 0 && dl_bad == 0);
    EXPECT(GomuksDownloadMediaPath(h, str_buf("{\"mxc\":\"mxc://other/5\"}"), NULL), "error",
           "\"invalid mxc URI\"");

    /* A sleep still running when the handle is destroyed ends at once with "context canceled";
     * queued emits are dropped. */
    EXPECT(submit(h, "emit", "{\"count\":1000000000,\"command\":\"flood\"}"), "response",
           "{\"queued\":1000000000}");
    CHECK(wait_for(&flood_events, 1));
    sleeper s = {h, {{0}, 0}, 0, 0};
    pthread_t stid;
    pthread_create(&stid, NULL, sleeper_main, &s);
    CHECK(wait_for(&s.calling, 1));
    /* The sleeper is about to call in; give it ample time to be inside the sleep (a destroy
     * before its call would abort the process: a handle used after GomuksDestroy). */
    struct timespec pause = {0, 300 * 1000000L};
    nanosleep(&pause, NULL);
    GomuksDestroy(h);
    pthread_join(stid, NULL);
    EXPECT(s.r, "error", "\"context canceled\"");
    CHECK(s.secs < 10);
    CHECK(flood_events > 0 && flood_events < 1000000000);
    CHECK(bad_events == 0);

    rmdir(root);
    if (failures) {
        fprintf(stderr, "smoke: %d check(s) failed\n", failures);
        return 1;
    }
    printf("smoke ok\n");
    return 0;
}
