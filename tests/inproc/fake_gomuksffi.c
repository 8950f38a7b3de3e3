/*
 * fake_gomuksffi.c: a deterministic test double of the gomuks C FFI library (libgomuksffi,
 * go.mau.fi/gomuks pkg/ffi, ABI of v0.2607.0 plus GomuksDownloadMediaPath from newer gomuks),
 * for tether's in-process transport tests. It talks to no homeserver and touches no files
 * except the two control files below. Written from the header and the protocol notes
 * (../shared/protocols/gomuks-rpc.md §12); no upstream code.
 *
 * Build: cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Werror -shared -fPIC \
 *           -o libfakegomuksffi.so fake_gomuksffi.c -lpthread
 * With -DFAKE_GOMUKS_NO_DOWNLOAD the library lacks GomuksDownloadMediaPath, like v0.2607.0.
 * With -DFAKE_GOMUKS_GO_RUNTIME it also exports an empty _cgo_panic, the symbol by which a
 * library Go built (and so its Go runtime) is recognised; nothing calls it.
 *
 * Rules (everything the double does):
 *
 * Buffers. Every GomuksOwnedBuffer (responses, event data) is malloc'd with exactly `length`
 *   bytes, no NUL after it (reading past `length` is caught by ASan/valgrind); the recipient
 *   frees it with GomuksFreeBuffer (= free) or free(). GomuksResponse.command and the event
 *   command names are static NUL-terminated strings, valid until the library is unloaded.
 *   Error data is a JSON string. Download chunks are borrowed: each is malloc'd before and
 *   freed right after its callback, so keeping one beyond the call is a use-after-free.
 *
 * Handles. GomuksInit(root) returns 1, 2, 3, ... (like a cgo.Handle: nonzero, never reused),
 *   copies root (NULL allowed: then no control files) and prints one line to stdout:
 *   "fake gomuks: init <root>" ("(null)" for NULL). It creates no directories.
 *
 * Misuse = process abort. These print "fake gomuks: panic: ..." to stderr and call abort(),
 *   as the real library's Go panics abort the host:
 *   - any call with a handle never returned by GomuksInit, or already destroyed;
 *   - SubmitCommand / Upload* / Download before GomuksStart returned 0: never started, start
 *     still running (also from inside the start callbacks), or start failed;
 *   - GomuksStart a second time on a handle (whatever the first outcome), or with a NULL cb;
 *   - GomuksDestroy while GomuksStart runs on that handle, or from inside that handle's
 *     EventCallback (the delivery thread cannot join itself);
 *   - a borrowed buffer with base NULL and length > 0;
 *   - any call while "logout" runs on the handle;
 *   - on a handle that started logged out (fake_logged_out) or logged out since: Upload*,
 *     Download, "logout", and the commands upload_media, calculate_room_id, get_profile,
 *     join_room and paginate (a sample of those that need the account), and (not with
 *     -DFAKE_GOMUKS_NO_DOWNLOAD, as older FFIs pass them to hicli) download_media and
 *     get_url_preview (the real library dereferences the nil homeserver URL or account there,
 *     interop/FINDINGS.md I7).
 *
 * GomuksStart(handle, cb).
 *   1. If <root>/fake_start_delay_ms holds an integer N > 0, sleep N ms first.
 *   2. If <root>/fake_start_code holds an integer N != 0, return N; cb is never called.
 *      (A control file holding no integer is ignored with a warning on stderr.)
 *   3. Else, on the calling thread before returning: cb("client_state", 0,
 *      {"is_logged_in":true,"is_verified":true,"user_id":"@fake:localhost","device_id":"FAKE"},
 *      or {"is_logged_in":false,"is_verified":false} when <root>/fake_logged_out
 *      holds an integer > 0) then cb("sync_status", 0, {"type":"waiting"});
 *      then start one delivery thread and return 0. All later events come from that thread,
 *      one at a time (callbacks are serialised), request_id always 0.
 *
 * GomuksSubmitCommand(handle, command, data). data is bytes (not NUL-terminated); the JSON
 *   scanner is minimal and tolerant: it finds the first `"key"` followed by `:` anywhere.
 *   - "echo": response = data unchanged (not validated); `{}` when data is empty.
 *   - "not_json": response data `not json {` (a backend breaking its JSON promise).
 *   - "sleep" {"ms":N}: waits N ms on the calling thread, response {"slept_ms":N}. If the
 *     handle is destroyed meanwhile it returns at once with error "context canceled".
 *   - "emit" {"count":N,"command":"name"}: queues N events and answers {"queued":N} at once;
 *     the delivery thread then calls cb(name, 0, {"seq":i}) for i = 0..N-1 back to back
 *     (with "not_json":true the data is the text `seq i` instead)
 *     (each data a fresh buffer). The events of one emit are contiguous; emits are delivered
 *     in the order they were queued. GomuksDestroy drops what is still queued.
 *   - "fake_stats": {"emitted":E,"max_callback_us":M,"callbacks":C,"submitted":S,
 *     "max_running":R}: E = emit events delivered, C = all EventCallback calls (the two start
 *     events included), M = the longest single EventCallback call in microseconds
 *     (CLOCK_MONOTONIC time around the call), S = GomuksSubmitCommand calls so far (this one
 *     included), R = the most of them that ran at once.
 *   - "logout" {"ms":N} (without a valid "ms", 0): aborts when logged out (it reads the
 *     account); else, as newer gomuks's Logout, any call on
 *     the handle while it runs aborts (its client is nil), and afterwards the handle is logged
 *     out (see the account calls above); it creates <root>/fake_logging_out as it starts,
 *     waits N ms, answers null, then queues client_state {"is_logged_in":false,...}; with
 *     "late_login_state":true, then also the logged-in client_state again (gomuks's old
 *     client reporting late, with the device that logged out).
 *   - "revoke" {"ms":N}: the homeserver revoked the session (signed out elsewhere), as
 *     gomuks meets it: queues sync_status {"type":"permanently-failed",
 *     "error":"M_UNKNOWN_TOKEN ..."};
 *     right after delivering it the delivery thread runs gomuks's own logout: any call on the
 *     handle aborts (its client is nil) for N ms, the handle is logged out, then
 *     client_state {"is_logged_in":false,...} is queued. Answers {"queued":1} at once.
 *   - "get_account_info": {"user_id":"@fake:localhost","device_id":"FAKE",
 *     "homeserver_url":"http://127.0.0.1:1","access_token":"fake-token"}.
 *   - anything else (NULL = ""): error "unknown command \"<name>\"" (JSON-escaped; invalid
 *     UTF-8 bytes become U+FFFD).
 *   - sleep/emit params that are missing or malformed: error "invalid params" (N must be a
 *     plain non-negative integer: ms <= 86400000, count <= 1000000000; the name a non-empty
 *     JSON string without \u0000).
 *   SubmitCommand may run on many threads at once and from inside the EventCallback.
 *
 * GomuksUploadMediaBytes(handle, params, bytes, cb). params must be non-empty (else error
 *   "invalid params"). A separate thread, joined before returning, calls cb(0), cb(50),
 *   cb(100) (skipped when cb is NULL). Response {"msgtype":"m.file","url":"mxc://fake/<len>",
 *   "info":{"size":<len>}}, len = bytes.length. With "fail":true in params: cb(0) only, then
 *   error "upload failed". With "hold_ms":N (N <= 60000) it returns N ms after its progress.
 *   fake_stats counts both uploads: "uploads" (all) and "max_uploading" (most at once).
 * GomuksUploadMediaPath(handle, params, cb). params {"path":"..."} (missing → "invalid
 *   params"); stat(path) fails → error "open <path>: no such file or directory" (other errnos:
 *   "open <path>: <strerror, lower-case first letter>"), a directory → error
 *   "read <path>: is a directory"; in these cases cb is not called. Else as the bytes variant
 *   with len = the file's size ("fail":true included).
 * GomuksDownloadMediaPath(handle, params, cb). params {"mxc":"mxc://fake/N"}, N decimal,
 *   0 <= N <= 4294967296 (missing mxc → "invalid params", anything else → error
 *   "invalid mxc URI"). On the calling thread, if cb is non-NULL: chunks of at most 65536
 *   bytes totalling N, byte k of the file = k % 251, then one final cb({NULL, 0}). Response
 *   {"path":"/fake/N","size":N}. Addition for fault tests: with "fail":true in params only the
 *   first chunk (if N > 0) is delivered, no final empty chunk, and the result is error
 *   "download failed".
 *
 * GomuksDestroy(handle). Stops and joins the delivery thread (queued emits are dropped; no
 *   EventCallback runs after it returns), wakes sleeping "sleep" commands, and invalidates
 *   the handle at once. Memory is freed when the last call still running on the handle
 *   returns. Destroying a handle whose start failed or never ran is fine.
 *   Except: if the handle started and <root>/fake_late_event_ms holds an integer N > 0, a
 *   detached thread calls the handle's EventCallback once more N ms after GomuksDestroy
 *   returned: cb("client_state", 0, {"is_logged_in":false,"is_verified":false,"late":true}).
 *   The real library can do that: its event goroutine may still send one event after
 *   GomuksDestroy, through the context-free callback that the next backend's client shares.
 *
 * GomuksFreeBuffer(buf) = free(buf.base).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- the ABI (layout of gomuksffi.h; build.sh checks the prototypes against it) ---- */

#ifdef FAKE_GOMUKS_UPSTREAM_HEADER
#include FAKE_GOMUKS_UPSTREAM_HEADER
#else
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
#endif
typedef void (*StreamCallback)(GomuksBorrowedBuffer data);

_Static_assert(sizeof(GomuksBorrowedBuffer) == 2 * sizeof(void *), "borrowed buffer layout");
_Static_assert(sizeof(GomuksOwnedBuffer) == 2 * sizeof(void *), "owned buffer layout");
_Static_assert(offsetof(GomuksResponse, command) == 2 * sizeof(void *), "response layout");

#define EXPORT __attribute__((visibility("default")))

EXPORT GomuksHandle GomuksInit(char *root);
EXPORT int GomuksStart(GomuksHandle handle, EventCallback callback);
EXPORT void GomuksDestroy(GomuksHandle handle);
EXPORT GomuksResponse GomuksSubmitCommand(GomuksHandle handle, char *command,
                                          GomuksBorrowedBuffer data);
EXPORT GomuksResponse GomuksUploadMediaPath(GomuksHandle handle, GomuksBorrowedBuffer params,
                                            ProgressCallback cb);
EXPORT GomuksResponse GomuksUploadMediaBytes(GomuksHandle handle, GomuksBorrowedBuffer params,
                                             GomuksBorrowedBuffer mediaBytes, ProgressCallback cb);
#ifndef FAKE_GOMUKS_NO_DOWNLOAD
EXPORT GomuksResponse GomuksDownloadMediaPath(GomuksHandle handle, GomuksBorrowedBuffer params,
                                              StreamCallback cb);
#endif
EXPORT void GomuksFreeBuffer(GomuksOwnedBuffer buf);

/* ---- small helpers ---- */

static const char RESP_OK[] = "response";
static const char RESP_ERR[] = "error";

/* The client_state of the fake account. */
#define LOGGED_IN_STATE \
    "{\"is_logged_in\":true,\"is_verified\":true,\"user_id\":\"@fake:localhost\",\"device_id\":\"FAKE\"}"

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    fputs("fake gomuks: panic: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void check_borrowed(const char *fn, GomuksBorrowedBuffer b) {
    if (!b.base && b.length) die("%s: buffer with base NULL and length %zu", fn, b.length);
}

/* Growable byte string, copied into an exact-size owned buffer at the end. */
typedef struct {
    char *p;
    size_t len, cap;
} sb;

static void sb_put(sb *b, const void *s, size_t n) {
    if (n > SIZE_MAX / 2 - b->len) die("out of memory");
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) die("out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(sb *b, const char *s) { sb_put(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void sb_printf(sb *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) die("sb_printf overflow");
    sb_put(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Appends s as a JSON string literal (quotes included). */
static void sb_json_str(sb *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
            i++;
        } else if (c < 0x20) {
            const char *e = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (e) sb_puts(b, e);
            else sb_printf(b, "\\u%04x", c);
            i++;
        } else {
            size_t l = utf8_seq(u + i, n - i);
            if (l) {
                sb_put(b, u + i, l);
                i += l;
            } else {
                sb_puts(b, "\\ufffd");
                i++;
            }
        }
    }
    sb_put(b, "\"", 1);
}

static GomuksOwnedBuffer owned_copy(const void *p, size_t n) {
    GomuksOwnedBuffer o = {xmalloc(n), n};
    if (n) memcpy(o.base, p, n);
    return o;
}

static GomuksResponse sb_response(sb *b, const char *command) {
    GomuksResponse r = {owned_copy(b->p, b->len), command};
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    return r;
}

static GomuksResponse ok_json(const char *json) {
    GomuksResponse r = {owned_copy(json, strlen(json)), RESP_OK};
    return r;
}

static GomuksResponse error_text(const char *msg) {
    sb b = {0};
    sb_json_str(&b, msg, strlen(msg));
    return sb_response(&b, RESP_ERR);
}

/* ---- minimal, tolerant JSON scanning over (p, n) bytes ---- */

static int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Offset of the value after the first `"key"` that is followed by ':' (whitespace allowed),
 * or -1. Not a parser: a matching key inside a nested object or a string value counts too. */
static long json_find(const uint8_t *p, size_t n, const char *key) {
    char pat[64];
    int pl = snprintf(pat, sizeof pat, "\"%s\"", key);
    if (!p || pl <= 0 || (size_t)pl >= sizeof pat) return -1;
    size_t from = 0;
    while (from < n) {
        const uint8_t *hit = memmem(p + from, n - from, pat, (size_t)pl);
        if (!hit) return -1;
        size_t i = (size_t)(hit - p) + (size_t)pl;
        while (i < n && is_ws(p[i])) i++;
        if (i < n && p[i] == ':') {
            i++;
            while (i < n && is_ws(p[i])) i++;
            return (long)i;
        }
        from = (size_t)(hit - p) + 1;
    }
    return -1;
}

static int value_ends(const uint8_t *p, size_t n, size_t i) {
    return i == n || is_ws(p[i]) || p[i] == ',' || p[i] == '}' || p[i] == ']';
}

/* A plain non-negative integer <= max under key. Returns 1 and sets *out, else 0. */
static int json_uint(const uint8_t *p, size_t n, const char *key, uint64_t max, uint64_t *out) {
    long at = json_find(p, n, key);
    if (at < 0) return 0;
    size_t i = (size_t)at;
    uint64_t v = 0;
    size_t digits = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        v = v * 10 + (uint64_t)(p[i] - '0');
        if (v > max) return 0;
        i++;
        digits++;
    }
    if (!digits || !value_ends(p, n, i)) return 0;
    *out = v;
    return 1;
}

static int json_true(const uint8_t *p, size_t n, const char *key) {
    long at = json_find(p, n, key);
    if (at < 0) return 0;
    size_t i = (size_t)at;
    return n - i >= 4 && memcmp(p + i, "true", 4) == 0 && value_ends(p, n, i + 4);
}

static void put_utf8(sb *b, uint32_t cp) {
    unsigned char u[4];
    size_t l = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[5] = {0, 0x00, 0xC0, 0xE0, 0xF0};
    for (size_t i = l - 1; i > 0; i--, cp >>= 6) u[i] = (unsigned char)(0x80 | (cp & 0x3F));
    u[0] = (unsigned char)(lead[l] | cp);
    sb_put(b, u, l);
}

static int hex4(const uint8_t *p, size_t n, size_t i, uint32_t *out) {
    uint32_t v = 0;
    if (n - i < 4) return 0;
    for (size_t k = i; k < i + 4; k++) {
        uint8_t c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* The JSON string under key, decoded and NUL-terminated (malloc'd), or NULL when absent, not
 * a string, malformed, or containing \u0000. Lone surrogates become U+FFFD. */
static char *json_string(const uint8_t *p, size_t n, const char *key) {
    long at = json_find(p, n, key);
    if (at < 0 || (size_t)at >= n || p[at] != '"') return NULL;
    sb b = {0};
    for (size_t i = (size_t)at + 1; i < n;) {
        uint8_t c = p[i];
        if (c == '"') {
            sb_put(&b, "", 1);
            return b.p;
        }
        if (c < 0x20) break;
        if (c != '\\') {
            sb_put(&b, &c, 1);
            i++;
            continue;
        }
        if (++i >= n) break;
        static const char esc[] = "\"\\/bfnrt", repl[] = "\"\\/\b\f\n\r\t";
        const char *simple = p[i] ? strchr(esc, p[i]) : NULL;
        if (simple) {
            sb_put(&b, &repl[simple - esc], 1);
            i++;
            continue;
        }
        uint32_t cp, lo;
        if (p[i] != 'u' || !hex4(p, n, i + 1, &cp)) break;
        i += 5;
        if (cp >= 0xD800 && cp <= 0xDBFF && n - i >= 6 && p[i] == '\\' && p[i + 1] == 'u' &&
            hex4(p, n, i + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = 0xFFFD;
        }
        if (cp == 0) break;
        put_utf8(&b, cp);
    }
    free(b.p);
    return NULL;
}

/* ---- instances ---- */

enum state { ST_INIT, ST_STARTING, ST_STARTED, ST_FAILED };

typedef struct job {
    struct job *next;
    const char *name; /* interned */
    uint64_t count, sent;
    int not_json; /* "not_json":true: the data is the text `seq N`, not JSON */
    const char *data; /* static: the data of each event instead of {"seq":N} */
    uint64_t revoke_ms; /* a "revoke" job: the logout after its event takes this long */
    int revoke;
} job;

typedef struct fake {
    struct fake *next; /* registry of live handles */
    GomuksHandle id;
    char *root;
    enum state state;
    EventCallback cb;
    int refs;     /* the registry's one + calls running on the handle */
    int stopping; /* set by GomuksDestroy */
    int have_thread;
    int logged_out; /* started with fake_logged_out > 0, or logged out since */
    int logging_out; /* a "logout" command is running */
    pthread_t thread;
    pthread_cond_t queue_cv; /* delivery thread: queue non-empty or stopping */
    pthread_cond_t stop_cv;  /* "sleep" commands: stopping */
    job *head, *tail;
    uint64_t emitted, callbacks, max_cb_us;
    uint64_t submitted, running, max_running; /* GomuksSubmitCommand calls: all, now, most at once */
    uint64_t uploads, uploading, max_uploading; /* GomuksUploadMedia* calls, the same */
} fake;

typedef struct name {
    struct name *next;
    char text[];
} name;

/* One lock for all state: registry, instances, queues, stats, interned names. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static fake *g_live;
static GomuksHandle g_next_id = 1;
static name *g_names;

static const char *intern_locked(const char *s) {
    for (name *n = g_names; n; n = n->next)
        if (strcmp(n->text, s) == 0) return n->text;
    size_t l = strlen(s);
    name *n = xmalloc(sizeof *n + l + 1);
    memcpy(n->text, s, l + 1);
    n->next = g_names;
    g_names = n;
    return n->text;
}

/* Interned names live until the library is unloaded (dlclose or exit), unless a handle is still
 * alive then (its delivery thread might be using one). */
__attribute__((destructor)) static void free_names(void) {
    pthread_mutex_lock(&g_mu);
    if (!g_live) {
        while (g_names) {
            name *n = g_names;
            g_names = n->next;
            free(n);
        }
    }
    pthread_mutex_unlock(&g_mu);
}

static fake *find_locked(const char *fn, GomuksHandle h) {
    for (fake *f = g_live; f; f = f->next)
        if (f->id == h) return f;
    if (h == 0 || h >= g_next_id)
        die("%s: handle %" PRIuPTR " was never returned by GomuksInit", fn, h);
    die("%s: handle %" PRIuPTR " was already destroyed", fn, h);
}

static void release_locked(fake *f) {
    if (--f->refs > 0) return;
    while (f->head) {
        job *j = f->head;
        f->head = j->next;
        free(j);
    }
    pthread_cond_destroy(&f->queue_cv);
    pthread_cond_destroy(&f->stop_cv);
    free(f->root);
    free(f);
}

static void release(fake *f) {
    pthread_mutex_lock(&g_mu);
    release_locked(f);
    pthread_mutex_unlock(&g_mu);
}

/* A started handle, referenced for the duration of a call. */
static fake *acquire(const char *fn, GomuksHandle h) {
    pthread_mutex_lock(&g_mu);
    fake *f = find_locked(fn, h);
    switch (f->state) {
    case ST_INIT: die("%s called before GomuksStart (handle %" PRIuPTR ")", fn, h);
    case ST_STARTING: die("%s called before GomuksStart returned (handle %" PRIuPTR ")", fn, h);
    case ST_FAILED: die("%s called after GomuksStart failed (handle %" PRIuPTR ")", fn, h);
    case ST_STARTED: break;
    }
    if (f->logging_out) die("%s called while logout runs (handle %" PRIuPTR "): the client is nil", fn, h);
    f->refs++;
    pthread_mutex_unlock(&g_mu);
    return f;
}

/* What needs an account aborts without one, as the real library's nil dereference does. */
static void needs_account(fake *f, const char *what) {
    pthread_mutex_lock(&g_mu);
    int out = f->logged_out;
    pthread_mutex_unlock(&g_mu);
    if (out) die("%s without an account: runtime error: invalid memory address or nil pointer dereference", what);
}

EXPORT GomuksHandle GomuksInit(char *root) {
    fake *f = xmalloc(sizeof *f);
    memset(f, 0, sizeof *f);
    if (root) {
        f->root = strdup(root);
        if (!f->root) die("out of memory");
    }
    f->refs = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->queue_cv, &ca);
    pthread_cond_init(&f->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&g_mu);
    f->id = g_next_id++;
    f->next = g_live;
    g_live = f;
    pthread_mutex_unlock(&g_mu);
    printf("fake gomuks: init %s\n", root ? root : "(null)");
    fflush(stdout);
    return f->id;
}

/* The integer in <root>/<file>, or 0 if there is none. */
static long long control_file(const fake *f, const char *file) {
    if (!f->root) return 0;
    size_t l = strlen(f->root) + strlen(file) + 2;
    char *path = xmalloc(l);
    snprintf(path, l, "%s/%s", f->root, file);
    FILE *fp = fopen(path, "r");
    long long v = 0;
    if (fp) {
        char buf[64] = {0};
        size_t got = fread(buf, 1, sizeof buf - 1, fp);
        fclose(fp);
        buf[got] = 0;
        char *end;
        errno = 0;
        v = strtoll(buf, &end, 10);
        while (*end && is_ws((uint8_t)*end)) end++;
        if (end == buf || *end || errno) {
            fprintf(stderr, "fake gomuks: warning: %s holds no integer, ignored\n", path);
            v = 0;
        }
    }
    free(path);
    return v;
}

static void queue_client_state_locked(fake *f, const char *data);

static void deliver(fake *f, const char *command, const char *json, int is_emit) {
    GomuksOwnedBuffer data = owned_copy(json, strlen(json));
    uint64_t t0 = now_us();
    f->cb(command, 0, data);
    uint64_t dt = now_us() - t0;
    pthread_mutex_lock(&g_mu);
    f->callbacks++;
    if (is_emit) f->emitted++;
    if (dt > f->max_cb_us) f->max_cb_us = dt;
    pthread_mutex_unlock(&g_mu);
}

static void *delivery_main(void *arg) {
    fake *f = arg;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!f->stopping && !f->head) pthread_cond_wait(&f->queue_cv, &g_mu);
        if (f->stopping) break;
        job *j = f->head;
        const char *cmd = j->name;
        int not_json = j->not_json; /* read before j may be freed below */
        const char *data = j->data;
        int revoke = j->revoke;
        uint64_t revoke_ms = j->revoke_ms;
        uint64_t seq = j->sent++;
        if (j->sent == j->count) {
            f->head = j->next;
            if (!f->head) f->tail = NULL;
            free(j);
        }
        pthread_mutex_unlock(&g_mu);
        char json[48];
        snprintf(json, sizeof json, not_json ? "seq %" PRIu64 : "{\"seq\":%" PRIu64 "}", seq);
        deliver(f, cmd, data ? data : json, !revoke);
        pthread_mutex_lock(&g_mu);
        if (revoke) {
            /* gomuks's logout after a revoked session: the client is nil until it restarts
             * one, whose client_state ends it. */
            f->logging_out = 1;
            f->logged_out = 1;
            pthread_mutex_unlock(&g_mu);
            sleep_ms(revoke_ms);
            pthread_mutex_lock(&g_mu);
            f->logging_out = 0;
            queue_client_state_locked(f, "{\"is_logged_in\":false,\"is_verified\":false}");
        }
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

EXPORT int GomuksStart(GomuksHandle h, EventCallback cb) {
    pthread_mutex_lock(&g_mu);
    fake *f = find_locked("GomuksStart", h);
    if (f->state != ST_INIT) die("GomuksStart called twice (handle %" PRIuPTR ")", h);
    if (!cb) die("GomuksStart called with a NULL callback (handle %" PRIuPTR ")", h);
    f->state = ST_STARTING;
    f->cb = cb;
    f->refs++;
    pthread_mutex_unlock(&g_mu);

    long long delay = control_file(f, "fake_start_delay_ms");
    if (delay > 0) sleep_ms((uint64_t)delay);
    long long code = control_file(f, "fake_start_code");
    if (code != 0 && (code < -2147483647LL - 1 || code > 2147483647LL)) {
        fprintf(stderr, "fake gomuks: warning: fake_start_code %lld out of range, ignored\n", code);
        code = 0;
    }
    if (code != 0) {
        pthread_mutex_lock(&g_mu);
        f->state = ST_FAILED;
        release_locked(f);
        pthread_mutex_unlock(&g_mu);
        return (int)code;
    }

    /* Logged in unless told otherwise: tether refuses account commands (upload_media, ...)
     * to a backend that says it is not, as the real one would abort the process. */
    int logged_out = control_file(f, "fake_logged_out") > 0;
    deliver(f, "client_state",
            logged_out ? "{\"is_logged_in\":false,\"is_verified\":false}"
                       : LOGGED_IN_STATE,
            0);
    deliver(f, "sync_status", "{\"type\":\"waiting\"}", 0);
    int rc = pthread_create(&f->thread, NULL, delivery_main, f);
    if (rc != 0) die("GomuksStart: pthread_create: %s", strerror(rc));
    pthread_mutex_lock(&g_mu);
    f->have_thread = 1;
    f->logged_out = logged_out;
    f->state = ST_STARTED;
    release_locked(f);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

typedef struct {
    EventCallback cb;
    uint64_t ms;
} late_event;

static void *late_event_main(void *arg) {
    late_event le = *(late_event *)arg;
    free(arg);
    sleep_ms(le.ms);
    static const char json[] = "{\"is_logged_in\":false,\"is_verified\":false,\"late\":true}";
    le.cb("client_state", 0, owned_copy(json, strlen(json)));
    return NULL;
}

EXPORT void GomuksDestroy(GomuksHandle h) {
    pthread_mutex_lock(&g_mu);
    fake *f = find_locked("GomuksDestroy", h);
    if (f->state == ST_STARTING)
        die("GomuksDestroy called while GomuksStart runs (handle %" PRIuPTR ")", h);
    if (f->have_thread && pthread_equal(f->thread, pthread_self()))
        die("GomuksDestroy called from the event callback (handle %" PRIuPTR ")", h);
    fake **pp = &g_live;
    while (*pp != f) pp = &(*pp)->next;
    *pp = f->next;
    f->stopping = 1;
    pthread_cond_broadcast(&f->queue_cv);
    pthread_cond_broadcast(&f->stop_cv);
    int have_thread = f->have_thread;
    pthread_mutex_unlock(&g_mu);
    if (have_thread) pthread_join(f->thread, NULL);
    long long late = have_thread ? control_file(f, "fake_late_event_ms") : 0;
    if (late > 0) {
        late_event *le = xmalloc(sizeof *le);
        le->cb = f->cb;
        le->ms = (uint64_t)late;
        pthread_t t;
        int rc = pthread_create(&t, NULL, late_event_main, le);
        if (rc != 0) die("GomuksDestroy: pthread_create: %s", strerror(rc));
        pthread_detach(t);
    }
    release(f);
}

EXPORT void GomuksFreeBuffer(GomuksOwnedBuffer buf) { free(buf.base); }

/* ---- commands ---- */

static GomuksResponse cmd_sleep(fake *f, const uint8_t *p, size_t n) {
    uint64_t ms;
    if (!json_uint(p, n, "ms", 86400000u, &ms)) return error_text("invalid params");
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(ms / 1000);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&g_mu);
    while (!f->stopping && pthread_cond_timedwait(&f->stop_cv, &g_mu, &dl) != ETIMEDOUT) {
    }
    int canceled = f->stopping;
    pthread_mutex_unlock(&g_mu);
    if (canceled) return error_text("context canceled");
    sb b = {0};
    sb_printf(&b, "{\"slept_ms\":%" PRIu64 "}", ms);
    return sb_response(&b, RESP_OK);
}

/* Queues `count` events named `name` (interned) for the delivery thread, each with the static
 * `data` or, when NULL, {"seq":i} (`seq i` with not_json); dropped once stopping. Under g_mu. */
static void queue_locked(fake *f, const char *name, uint64_t count, int not_json,
                         const char *data) {
    if (f->stopping) return;
    job *j = xmalloc(sizeof *j);
    j->next = NULL;
    j->name = name;
    j->count = count;
    j->sent = 0;
    j->not_json = not_json;
    j->data = data;
    j->revoke = 0;
    j->revoke_ms = 0;
    if (f->tail) f->tail->next = j;
    else f->head = j;
    f->tail = j;
    pthread_cond_signal(&f->queue_cv);
}

/* Queues one client_state event with static `data`; under g_mu. */
static void queue_client_state_locked(fake *f, const char *data) {
    queue_locked(f, intern_locked("client_state"), 1, 0, data);
}

static GomuksResponse cmd_revoke(fake *f, const uint8_t *p, size_t n) {
    uint64_t ms;
    if (!json_uint(p, n, "ms", 86400000u, &ms)) return error_text("invalid params");
    pthread_mutex_lock(&g_mu);
    queue_locked(f, intern_locked("sync_status"), 1, 0,
                 "{\"type\":\"permanently-failed\",\"error\":\"M_UNKNOWN_TOKEN (HTTP 401): Invalid access "
                 "token passed.\",\"error_count\":1}");
    if (f->tail && !f->stopping) {
        f->tail->revoke = 1;
        f->tail->revoke_ms = ms;
    }
    pthread_mutex_unlock(&g_mu);
    return ok_json("{\"queued\":1}");
}

static GomuksResponse cmd_emit(fake *f, const uint8_t *p, size_t n) {
    uint64_t count;
    if (!json_uint(p, n, "count", 1000000000u, &count)) return error_text("invalid params");
    char *cmd = json_string(p, n, "command");
    if (!cmd || !*cmd) {
        free(cmd);
        return error_text("invalid params");
    }
    pthread_mutex_lock(&g_mu);
    if (count > 0) queue_locked(f, intern_locked(cmd), count, json_true(p, n, "not_json"), NULL);
    pthread_mutex_unlock(&g_mu);
    free(cmd);
    sb b = {0};
    sb_printf(&b, "{\"queued\":%" PRIu64 "}", count);
    return sb_response(&b, RESP_OK);
}


/* Newer gomuks's Logout: its client is nil from the start (any call meanwhile panics), the
 * account is gone, and client_state says so at the end. */
static GomuksResponse cmd_logout(fake *f, const uint8_t *p, size_t n) {
    uint64_t ms = 0;
    if (!json_uint(p, n, "ms", 86400000u, &ms)) ms = 0; /* optional: gomuks takes no params */
    needs_account(f, "logout"); /* gomuks's Logout reads the account first */
    pthread_mutex_lock(&g_mu);
    f->logging_out = 1;
    f->logged_out = 1;
    pthread_mutex_unlock(&g_mu);
    if (f->root) { /* tells a test the logout is under way */
        size_t l = strlen(f->root) + sizeof "/fake_logging_out";
        char *path = xmalloc(l);
        snprintf(path, l, "%s/fake_logging_out", f->root);
        FILE *fp = fopen(path, "w");
        if (fp) fclose(fp);
        free(path);
    }
    sleep_ms(ms);
    pthread_mutex_lock(&g_mu);
    f->logging_out = 0;
    queue_client_state_locked(f, "{\"is_logged_in\":false,\"is_verified\":false}");
    /* gomuks's old client can still report its state after the logout (a profile fetch
     * that comes back late): it says logged in, with the device that logged out. */
    if (json_true(p, n, "late_login_state")) queue_client_state_locked(f, LOGGED_IN_STATE);
    pthread_mutex_unlock(&g_mu);
    return ok_json("null");
}

static GomuksResponse cmd_stats(fake *f) {
    pthread_mutex_lock(&g_mu);
    uint64_t e = f->emitted, m = f->max_cb_us, c = f->callbacks, s = f->submitted, r = f->max_running;
    uint64_t u = f->uploads, mu = f->max_uploading;
    pthread_mutex_unlock(&g_mu);
    sb b = {0};
    sb_printf(&b,
              "{\"emitted\":%" PRIu64 ",\"max_callback_us\":%" PRIu64 ",\"callbacks\":%" PRIu64
              ",\"submitted\":%" PRIu64 ",\"max_running\":%" PRIu64 ",\"uploads\":%" PRIu64
              ",\"max_uploading\":%" PRIu64 "}",
              e, m, c, s, r, u, mu);
    return sb_response(&b, RESP_OK);
}

EXPORT GomuksResponse GomuksSubmitCommand(GomuksHandle h, char *command, GomuksBorrowedBuffer data) {
    fake *f = acquire("GomuksSubmitCommand", h);
    check_borrowed("GomuksSubmitCommand", data);
    pthread_mutex_lock(&g_mu);
    f->submitted++;
    if (++f->running > f->max_running) f->max_running = f->running;
    pthread_mutex_unlock(&g_mu);
    const char *c = command ? command : "";
    /* download_media and get_url_preview are run by the FFI itself from the version that
     * has GomuksDownloadMediaPath on; older ones pass them to hicli, which does not know them. */
    static const char *const account_commands[] = {"upload_media", "calculate_room_id",
                                                   "get_profile", "join_room", "paginate",
#ifndef FAKE_GOMUKS_NO_DOWNLOAD
                                                   "download_media", "get_url_preview",
#endif
    };
    for (size_t i = 0; i < sizeof account_commands / sizeof *account_commands; i++)
        if (strcmp(c, account_commands[i]) == 0) needs_account(f, c);
    const uint8_t *p = data.base;
    size_t n = data.length;
    GomuksResponse r;
    if (strcmp(c, "echo") == 0) {
        r = n ? (GomuksResponse){owned_copy(p, n), RESP_OK} : ok_json("{}");
    } else if (strcmp(c, "not_json") == 0) {
        static const char text[] = "not json {";
        r = (GomuksResponse){owned_copy((const uint8_t *)text, sizeof text - 1), RESP_OK};
    } else if (strcmp(c, "sleep") == 0) {
        r = cmd_sleep(f, p, n);
    } else if (strcmp(c, "emit") == 0) {
        r = cmd_emit(f, p, n);
    } else if (strcmp(c, "logout") == 0) {
        r = cmd_logout(f, p, n);
    } else if (strcmp(c, "revoke") == 0) {
        r = cmd_revoke(f, p, n);
    } else if (strcmp(c, "fake_stats") == 0) {
        r = cmd_stats(f);
    } else if (strcmp(c, "get_account_info") == 0) {
        r = ok_json("{\"user_id\":\"@fake:localhost\",\"device_id\":\"FAKE\","
                    "\"homeserver_url\":\"http://127.0.0.1:1\",\"access_token\":\"fake-token\"}");
    } else {
        sb msg = {0}, b = {0};
        sb_puts(&msg, "unknown command \"");
        sb_puts(&msg, c);
        sb_puts(&msg, "\"");
        sb_json_str(&b, msg.p, msg.len);
        free(msg.p);
        r = sb_response(&b, RESP_ERR);
    }
    pthread_mutex_lock(&g_mu);
    f->running--;
    pthread_mutex_unlock(&g_mu);
    release(f);
    return r;
}

/* ---- media ---- */

typedef struct {
    ProgressCallback cb;
    int fail;
} progress_job;

static void *progress_main(void *arg) {
    progress_job *pj = arg;
    pj->cb(0);
    if (!pj->fail) {
        pj->cb(50);
        pj->cb(100);
    }
    return NULL;
}

/* Counts an upload that starts; upload_ends sleeps "hold_ms" of its params (at most 60 s) once
 * it has reported its progress, so that a test can keep the FFI's progress slots taken. */
static void upload_starts(fake *f) {
    pthread_mutex_lock(&g_mu);
    f->uploads++;
    if (++f->uploading > f->max_uploading) f->max_uploading = f->uploading;
    pthread_mutex_unlock(&g_mu);
}

static void upload_ends(fake *f, GomuksBorrowedBuffer params) {
    uint64_t ms = 0;
    if (params.length && json_uint(params.base, params.length, "hold_ms", 60000u, &ms) && ms)
        nanosleep(&(struct timespec){(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L}, NULL);
    pthread_mutex_lock(&g_mu);
    f->uploading--;
    pthread_mutex_unlock(&g_mu);
}

/* The shared tail of both uploads: progress from another thread, then the result. */
static GomuksResponse upload_result(uint64_t len, int fail, ProgressCallback cb) {
    if (cb) {
        progress_job pj = {cb, fail};
        pthread_t t;
        int rc = pthread_create(&t, NULL, progress_main, &pj);
        if (rc != 0) die("upload: pthread_create: %s", strerror(rc));
        pthread_join(t, NULL);
    }
    if (fail) return error_text("upload failed");
    sb b = {0};
    sb_printf(&b, "{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/%" PRIu64
                  "\",\"info\":{\"size\":%" PRIu64 "}}",
              len, len);
    return sb_response(&b, RESP_OK);
}

EXPORT GomuksResponse GomuksUploadMediaBytes(GomuksHandle h, GomuksBorrowedBuffer params,
                                             GomuksBorrowedBuffer mediaBytes, ProgressCallback cb) {
    fake *f = acquire("GomuksUploadMediaBytes", h);
    needs_account(f, "GomuksUploadMediaBytes");
    check_borrowed("GomuksUploadMediaBytes", params);
    check_borrowed("GomuksUploadMediaBytes", mediaBytes);
    upload_starts(f);
    GomuksResponse r;
    if (params.length == 0) r = error_text("invalid params");
    else r = upload_result(mediaBytes.length, json_true(params.base, params.length, "fail"), cb);
    upload_ends(f, params);
    release(f);
    return r;
}

EXPORT GomuksResponse GomuksUploadMediaPath(GomuksHandle h, GomuksBorrowedBuffer params,
                                            ProgressCallback cb) {
    fake *f = acquire("GomuksUploadMediaPath", h);
    needs_account(f, "GomuksUploadMediaPath");
    check_borrowed("GomuksUploadMediaPath", params);
    upload_starts(f);
    GomuksResponse r;
    char *path = json_string(params.base, params.length, "path");
    struct stat st;
    int err = 0;
    if (path && stat(path, &st) != 0) err = errno;
    else if (path && S_ISDIR(st.st_mode)) err = EISDIR;
    if (!path) {
        r = error_text("invalid params");
    } else if (err) {
        /* Worded like Go's *os.PathError. */
        char reason[128];
        snprintf(reason, sizeof reason, "%s",
                 err == ENOENT ? "no such file or directory" : strerror(err));
        if (reason[0] >= 'A' && reason[0] <= 'Z') reason[0] = (char)(reason[0] - 'A' + 'a');
        sb msg = {0}, b = {0};
        sb_puts(&msg, err == EISDIR ? "read " : "open ");
        sb_puts(&msg, path);
        sb_puts(&msg, ": ");
        sb_puts(&msg, reason);
        sb_json_str(&b, msg.p, msg.len);
        free(msg.p);
        r = sb_response(&b, RESP_ERR);
    } else {
        r = upload_result((uint64_t)st.st_size, json_true(params.base, params.length, "fail"), cb);
    }
    free(path);
    upload_ends(f, params);
    release(f);
    return r;
}

#ifndef FAKE_GOMUKS_NO_DOWNLOAD
#define CHUNK_MAX 65536u

EXPORT GomuksResponse GomuksDownloadMediaPath(GomuksHandle h, GomuksBorrowedBuffer params,
                                              StreamCallback cb) {
    fake *f = acquire("GomuksDownloadMediaPath", h);
    needs_account(f, "GomuksDownloadMediaPath");
    check_borrowed("GomuksDownloadMediaPath", params);
    GomuksResponse r;
    char *mxc = json_string(params.base, params.length, "mxc");
    static const char prefix[] = "mxc://fake/";
    const size_t pl = sizeof prefix - 1;
    uint64_t size = 0;
    int ok = mxc != NULL && strncmp(mxc, prefix, pl) == 0 && mxc[pl] != 0;
    for (const char *s = ok ? mxc + pl : ""; ok && *s; s++) {
        if (*s < '0' || *s > '9') ok = 0;
        else if ((size = size * 10 + (uint64_t)(*s - '0')) > 4294967296u) ok = 0;
    }
    if (!mxc) {
        r = error_text("invalid params");
    } else if (!ok) {
        r = error_text("invalid mxc URI");
    } else {
        int fail = json_true(params.base, params.length, "fail");
        if (cb) {
            for (uint64_t off = 0; off < size;) {
                size_t len = size - off < CHUNK_MAX ? (size_t)(size - off) : CHUNK_MAX;
                uint8_t *chunk = xmalloc(len);
                for (size_t i = 0; i < len; i++) chunk[i] = (uint8_t)((off + i) % 251u);
                cb((GomuksBorrowedBuffer){chunk, len});
                free(chunk); /* borrowed: gone after the call */
                off += len;
                if (fail) break;
            }
            if (!fail) cb((GomuksBorrowedBuffer){NULL, 0});
        }
        if (fail) {
            r = error_text("download failed");
        } else {
            sb b = {0};
            sb_printf(&b, "{\"path\":\"/fake/%" PRIu64 "\",\"size\":%" PRIu64 "}", size, size);
            r = sb_response(&b, RESP_OK);
        }
    }
    free(mxc);
    release(f);
    return r;
}
#endif

#ifdef FAKE_GOMUKS_GO_RUNTIME
EXPORT void _cgo_panic(void);
void _cgo_panic(void) {}
#endif
