/*
 * Wire-level helpers for the interop tests: plain HTTP requests, a hand-rolled websocket
 * client for what the library must never send (binary frames, bad JSON), a silent TCP peer
 * and a relay that watches the frames passing between the library and the backend.
 * Everything is bounded in time; failures go through th_fail (tests/c/harness.h).
 */
#ifndef TETHER_INTEROP_WIRE_H
#define TETHER_INTEROP_WIRE_H

#include "harness.h"

#include <pthread.h>

static inline void w_base64(const char *in, char *out, size_t cap) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (uint32_t)(unsigned char)in[i + 2];
        if (o + 5 > cap) th_fail(__FILE__, __LINE__, "base64 buffer too small");
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = 0;
}

static inline int w_connect(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
        th_fail(__FILE__, __LINE__, "connect to %d: %s", port, strerror(errno));
    return s;
}

/* A listening socket on 127.0.0.1 with a kernel-chosen port. */
static inline int w_listen(int *port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(listen(s, 16) == 0);
    socklen_t len = sizeof sa;
    CHECK(getsockname(s, (struct sockaddr *)&sa, &len) == 0);
    *port = ntohs(sa.sin_port);
    return s;
}

static inline int w_readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms * th_scale()) == 1;
}

static inline void w_write_all(int s, const void *buf, size_t n) {
    const char *p = (const char *)buf;
    while (n > 0) {
        /* send, not write: a peer gone meanwhile is an error here, not a SIGPIPE that kills
         * the test process (exit 141) before it can say what went wrong. */
        ssize_t w = send(s, p, n, MSG_NOSIGNAL);
        if (w <= 0) th_fail(__FILE__, __LINE__, "write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* Reads until "\r\n\r\n" (or EOF); returns the length, NUL-terminates. */
static inline size_t w_read_head(int s, char *buf, size_t cap) {
    size_t len = 0;
    while (len < cap - 1) {
        if (!w_readable(s, 10000)) th_fail(__FILE__, __LINE__, "no HTTP response in time");
        ssize_t r = read(s, buf + len, 1);
        if (r <= 0) break;
        len++;
        if (len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0) break;
    }
    buf[len] = 0;
    return len;
}

/* One HTTP/1.1 request with `headers` (each ending in \r\n, may be ""). Returns the status;
 * the whole response (head and body, NUL-terminated) goes to `resp`. */
static inline int w_http(int port, const char *method, const char *path, const char *headers,
                         char *resp, size_t cap) {
    int s = w_connect(port);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     method, path, port, headers);
    CHECK(n > 0 && (size_t)n < sizeof req);
    w_write_all(s, req, (size_t)n);
    size_t len = 0;
    for (;;) {
        if (!w_readable(s, 10000)) th_fail(__FILE__, __LINE__, "HTTP response timeout");
        ssize_t r = read(s, resp + len, cap - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        if (len == cap - 1) break;
    }
    close(s);
    resp[len] = 0;
    int code = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
        th_fail(__FILE__, __LINE__, "bad HTTP response: %s", resp);
    return code;
}

/* The body of an HTTP response held in `resp`. */
static inline const char *w_body(const char *resp) {
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

/* Opens a websocket by hand at `path` (auth header given whole, e.g. "Cookie: ...\r\n"),
 * checks the 101, and returns the socket. */
static inline int w_ws_open_path(int port, const char *path, const char *auth_header) {
    int s = w_connect(port);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, port, auth_header);
    w_write_all(s, req, (size_t)n);
    char head[4096];
    w_read_head(s, head, sizeof head);
    if (strncmp(head, "HTTP/1.1 101", 12) != 0)
        th_fail(__FILE__, __LINE__, "websocket upgrade refused: %s", head);
    return s;
}

static inline int w_ws_open(int port, const char *auth_header) {
    return w_ws_open_path(port, "/_gomuks/websocket", auth_header);
}

/* Sends one masked client frame. */
static inline void w_ws_send(int s, int opcode, const void *payload, size_t n) {
    unsigned char hdr[8];
    size_t h = 0;
    CHECK(n < 65536);
    hdr[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (unsigned char)(0x80 | n);
    } else {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(n >> 8);
        hdr[h++] = (unsigned char)n;
    }
    const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(hdr + h, mask, 4);
    h += 4;
    w_write_all(s, hdr, h);
    unsigned char buf[65536];
    for (size_t i = 0; i < n; i++) buf[i] = ((const unsigned char *)payload)[i] ^ mask[i % 4];
    w_write_all(s, buf, n);
}

/* Reads exactly n bytes (bounded wait); returns 0 on EOF. */
static inline int w_read_exact(int s, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (!w_readable(s, 15000)) th_fail(__FILE__, __LINE__, "frame read timeout");
        ssize_t r = read(s, buf + got, n - got);
        if (r <= 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

/* One server frame (unmasked): opcode, FIN bit, payload into buf (NUL-terminated). Returns
 * the payload length, or -1 if the connection ended. */
static inline long w_ws_frame(int s, int *opcode, int *fin, unsigned char *buf, size_t cap) {
    unsigned char h[2];
    if (!w_read_exact(s, h, 2)) return -1;
    uint64_t n = h[1] & 0x7f;
    if (n == 126) {
        unsigned char e[2];
        if (!w_read_exact(s, e, 2)) return -1;
        n = ((uint64_t)e[0] << 8) | e[1];
    } else if (n == 127) {
        unsigned char e[8];
        if (!w_read_exact(s, e, 8)) return -1;
        n = 0;
        for (int i = 0; i < 8; i++) n = (n << 8) | e[i];
    }
    CHECK(!(h[1] & 0x80)); /* servers never mask */
    CHECK(n < cap);
    if (!w_read_exact(s, buf, (size_t)n)) return -1;
    buf[n] = 0;
    *opcode = h[0] & 0x0f;
    *fin = (h[0] & 0x80) != 0;
    return (long)n;
}

/* The next whole text message (continuation frames joined: gomuks ends each message with an
 * empty final continuation frame, §3.2) into buf; fails on anything else. */
static inline void w_ws_read_text(int s, char *buf, size_t cap) {
    size_t len = 0;
    int first = 1;
    for (;;) {
        int op = 0, fin = 0;
        long n = w_ws_frame(s, &op, &fin, (unsigned char *)buf + len, cap - len);
        if (n < 0) th_fail(__FILE__, __LINE__, "connection ended while waiting for a message");
        if (op == 8) th_fail(__FILE__, __LINE__, "closed while waiting for a message");
        if (op == 9 || op == 10) continue;
        CHECK(first ? op == 1 : op == 0);
        first = 0;
        len += (size_t)n;
        if (fin) break;
    }
    buf[len] = 0;
}

/* Reads server frames until a close frame; returns its code (reason copied), or 1006 if the
 * connection ended without one. */
static inline int w_ws_wait_close(int s, char *reason, size_t cap) {
    static unsigned char payload[1 << 20];
    reason[0] = 0;
    for (;;) {
        int op = 0, fin = 0;
        long n = w_ws_frame(s, &op, &fin, payload, sizeof payload);
        if (n < 0) return 1006;
        if (op == 8) {
            if (n < 2) return 1005;
            size_t rl = (size_t)n - 2 < cap - 1 ? (size_t)n - 2 : cap - 1;
            memcpy(reason, payload + 2, rl);
            reason[rl] = 0;
            return (payload[0] << 8) | payload[1];
        }
    }
}

/* A relay between the library and the backend that reads the websocket frames both ways: the
 * opcode of the server's first data frame (text 1 or binary 2: tells a compressed session from
 * a plain one) and the code of the client's close frame. Each accepted connection gets its own
 * thread (the library keeps its auth connection open while it upgrades on another). */
#define W_RELAY_MAX 64

typedef struct w_relay w_relay;

/* Incremental websocket frame reader for one direction. Frames are parsed only after an HTTP
 * head that belongs to a websocket (an upgrade request, or a 101 answer). */
typedef struct {
    unsigned char buf[1 << 16];
    size_t len;
    int head_done, is_ws;
    uint64_t skip; /* payload bytes of the current frame still to drop */
} w_stream;

typedef struct {
    w_relay *relay;
    int a, b;
    pthread_t thread;
    w_stream up, down;
} w_relay_conn;

struct w_relay {
    int listen_fd, port, target_port;
    pthread_t thread;
    pthread_mutex_t lock;
    int first_server_opcode; /* 0 until seen */
    int client_close_code;   /* 0 until seen, 1005 if the close frame had no code */
    int ws_connections;
    int nconns;
    w_relay_conn conns[W_RELAY_MAX];
    volatile int stop;
    volatile int refuse; /* accept and close at once: a server that is down */
};

/* Feeds bytes; calls back (opcode, payload prefix up to 125 bytes unmasked) per frame once
 * that prefix is known. */
static inline void w_stream_feed(w_stream *st, const unsigned char *p, size_t n,
                                 void (*on_frame)(w_relay *, int, const unsigned char *, size_t),
                                 w_relay *r) {
    if (st->head_done && !st->is_ws) return;
    if (st->len + n > sizeof st->buf) n = sizeof st->buf - st->len; /* relay keeps forwarding */
    memcpy(st->buf + st->len, p, n);
    st->len += n;
    size_t pos = 0;
    if (!st->head_done) {
        for (size_t i = 3; i < st->len; i++) {
            if (memcmp(st->buf + i - 3, "\r\n\r\n", 4) == 0) {
                st->head_done = 1;
                st->is_ws = strncmp((const char *)st->buf, "GET /_gomuks/websocket", 22) == 0 ||
                            strncmp((const char *)st->buf, "HTTP/1.1 101", 12) == 0;
                pos = i + 1;
                break;
            }
        }
        if (!st->head_done || !st->is_ws) return;
    }
    for (;;) {
        if (st->skip > 0) {
            size_t take = st->len - pos < st->skip ? st->len - pos : (size_t)st->skip;
            pos += take;
            st->skip -= take;
            if (st->skip > 0) break;
        }
        if (st->len - pos < 2) break;
        const unsigned char *h = st->buf + pos;
        int masked = h[1] & 0x80;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (st->len - pos < 4) break;
            plen = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (st->len - pos < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | h[2 + i];
            hl = 10;
        }
        size_t ml = masked ? 4 : 0;
        size_t want = plen < 125 ? (size_t)plen : 125;
        if (st->len - pos < hl + ml + want) break;
        unsigned char pl[125];
        for (size_t i = 0; i < want; i++)
            pl[i] = h[hl + ml + i] ^ (masked ? h[hl + (i % 4)] : 0);
        on_frame(r, h[0] & 0x0f, pl, want);
        pos += hl + ml;
        st->skip = plen;
    }
    memmove(st->buf, st->buf + pos, st->len - pos);
    st->len -= pos;
}

static inline void w_on_server_frame(w_relay *r, int op, const unsigned char *p, size_t n) {
    (void)p;
    (void)n;
    pthread_mutex_lock(&r->lock);
    if (r->first_server_opcode == 0 && (op == 1 || op == 2)) r->first_server_opcode = op;
    pthread_mutex_unlock(&r->lock);
}

static inline void w_on_client_frame(w_relay *r, int op, const unsigned char *p, size_t n) {
    if (op != 8) return;
    pthread_mutex_lock(&r->lock);
    r->client_close_code = n >= 2 ? (p[0] << 8) | p[1] : 1005;
    pthread_mutex_unlock(&r->lock);
}

static inline void *w_relay_conn_main(void *arg) {
    w_relay_conn *c = (w_relay_conn *)arg;
    w_relay *r = c->relay;
    int open = 1;
    while (open && !r->stop) {
        struct pollfd p[2] = {{c->a, POLLIN, 0}, {c->b, POLLIN, 0}};
        if (poll(p, 2, 100) <= 0) continue;
        for (int i = 0; i < 2 && open; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            unsigned char buf[16384];
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0) {
                open = 0;
                break;
            }
            int to = i == 0 ? c->b : c->a;
            const unsigned char *q = buf;
            size_t left = (size_t)n;
            while (left > 0) {
                /* A cut shuts the other end down while this may be writing to it. */
                ssize_t w = send(to, q, left, MSG_NOSIGNAL);
                if (w <= 0) {
                    open = 0;
                    break;
                }
                q += w;
                left -= (size_t)w;
            }
            if (i == 0) {
                int was_ws = c->up.is_ws;
                w_stream_feed(&c->up, buf, (size_t)n, w_on_client_frame, r);
                if (!was_ws && c->up.is_ws) {
                    pthread_mutex_lock(&r->lock);
                    r->ws_connections++;
                    pthread_mutex_unlock(&r->lock);
                }
            } else {
                w_stream_feed(&c->down, buf, (size_t)n, w_on_server_frame, r);
            }
        }
    }
    /* Both ends see the cut, as they would with a real network drop. */
    shutdown(c->a, SHUT_RDWR);
    shutdown(c->b, SHUT_RDWR);
    return NULL;
}

static inline void *w_relay_main(void *arg) {
    w_relay *r = (w_relay *)arg;
    while (!r->stop) {
        struct pollfd lp = {r->listen_fd, POLLIN, 0};
        if (poll(&lp, 1, 100) != 1) continue;
        int a = accept(r->listen_fd, NULL, NULL);
        if (a < 0) continue;
        if (r->refuse || r->nconns == W_RELAY_MAX) {
            close(a);
            continue;
        }
        w_relay_conn *c = &r->conns[r->nconns];
        memset(c, 0, sizeof *c);
        c->relay = r;
        c->a = a;
        c->b = w_connect(r->target_port);
        if (pthread_create(&c->thread, NULL, w_relay_conn_main, c) != 0) {
            close(c->a);
            close(c->b);
            continue;
        }
        pthread_mutex_lock(&r->lock);
        r->nconns++;
        pthread_mutex_unlock(&r->lock);
    }
    return NULL;
}

/* Cuts every relayed connection (both ends see a TCP shutdown, no close frame): a network
 * drop. */
static inline void w_relay_cut(w_relay *r) {
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->nconns; i++) {
        shutdown(r->conns[i].a, SHUT_RDWR);
        shutdown(r->conns[i].b, SHUT_RDWR);
    }
    pthread_mutex_unlock(&r->lock);
}

static inline void w_relay_start(w_relay *r, int target_port) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->target_port = target_port;
    r->listen_fd = w_listen(&r->port);
    CHECK(pthread_create(&r->thread, NULL, w_relay_main, r) == 0);
}

static inline int w_relay_get(w_relay *r, const int *field) {
    pthread_mutex_lock(&r->lock);
    int v = *field;
    pthread_mutex_unlock(&r->lock);
    return v;
}

static inline void w_relay_stop(w_relay *r) {
    r->stop = 1;
    pthread_join(r->thread, NULL);
    for (int i = 0; i < r->nconns; i++) {
        pthread_join(r->conns[i].thread, NULL);
        close(r->conns[i].a);
        close(r->conns[i].b);
    }
    close(r->listen_fd);
    pthread_mutex_destroy(&r->lock);
}

#endif
