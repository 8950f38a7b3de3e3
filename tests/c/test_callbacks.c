/*
 * Callback mode (ARCHITECTURE.md "Runtime and threads"): one dispatcher thread, events in order,
 * destroy(ctx) exactly once after the last callback; request, close and free allowed inside
 * a callback; free from another thread waits for a running callback.
 */
#include "harness.h"

#include <pthread.h>

static th_backend backend;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tether_client *client;
    pthread_t main_thread;
    pthread_t dispatch_thread;
    int have_dispatch_thread;
    int events;
    int destroyed;
    int after_destroy; /* callbacks seen after destroy: must stay 0 */
    int wrong_thread;  /* callbacks on the main thread or on two threads: must stay 0 */
    int closed_seen;
    int64_t last_message_id;
    int out_of_order;
    int64_t echo_id;
    int echo_ok;
    int freed_inside;
    int slow_ms;
    int in_callback;
    int callback_done;
    int init_complete;
    int counted_inside; /* buffered events already in the resume state inside their callback */
} state;

static void state_init(state *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->main_thread = pthread_self();
}

static void state_destroy(state *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* Waits until the int at `flag` (guarded by s->mu) is non-zero. */
static void wait_flag(state *s, const int *flag) {
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    pthread_mutex_lock(&s->mu);
    while (!*flag) {
        pthread_mutex_unlock(&s->mu);
        CHECK(th_now_ms() < deadline);
        usleep(2000);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

static void wait_destroyed(state *s) { wait_flag(s, &s->destroyed); }

static void on_destroy(void *ctx) {
    state *s = (state *)ctx;
    pthread_mutex_lock(&s->mu);
    s->destroyed++;
    pthread_mutex_unlock(&s->mu);
}

/* Checks ordering and threading of every callback. */
static void record(state *s, const tether_event *ev) {
    pthread_mutex_lock(&s->mu);
    if (s->destroyed) s->after_destroy++;
    if (pthread_equal(pthread_self(), s->main_thread)) s->wrong_thread++;
    if (!s->have_dispatch_thread) {
        s->dispatch_thread = pthread_self();
        s->have_dispatch_thread = 1;
    } else if (!pthread_equal(s->dispatch_thread, pthread_self())) {
        s->wrong_thread++;
    }
    s->events++;
    int64_t id = tether_event_request_id(ev);
    if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && id < 0) {
        if (s->last_message_id != 0 && id != s->last_message_id - 1) s->out_of_order++;
        s->last_message_id = id;
    }
    if (tether_event_kind(ev) == TETHER_EVENT_CLOSED) s->closed_seen++;
    if (strcmp(tether_event_command(ev), "init_complete") == 0) s->init_complete = 1;
    pthread_mutex_unlock(&s->mu);
}

/* On init_complete: send an echo from inside the callback; on its reply: close from inside. */
static void on_event_request_then_close(void *ctx, const tether_event *ev) {
    state *s = (state *)ctx;
    record(s, ev);
    if (strcmp(tether_event_command(ev), "init_complete") == 0) {
        int64_t id = 0;
        CHECK_OK(tether_client_request(s->client, "echo", (const uint8_t *)"[1,2]", 5, &id));
        s->echo_id = id;
    } else if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE &&
               tether_event_request_id(ev) == s->echo_id) {
        s->echo_ok = tether_event_status(ev) == TETHER_OK && th_data_is(ev, "[1,2]");
        CHECK_OK(tether_client_close(s->client));
    }
}

static void test_request_and_close_inside_callback(void) {
    state s;
    state_init(&s);
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_request_then_close, &s,
                                              on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    wait_destroyed(&s);
    CHECK(s.echo_ok);
    CHECK(s.closed_seen == 1);
    CHECK(s.wrong_thread == 0);
    tether_client_free(s.client);
    CHECK(s.destroyed == 1 && s.after_destroy == 0);
    state_destroy(&s);
}

static void on_event_in_order(void *ctx, const tether_event *ev) { record((state *)ctx, ev); }

static void test_events_in_order_on_one_thread(void) {
    state s;
    state_init(&s);
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_in_order, &s, on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    wait_flag(&s, &s.init_complete);
    int64_t newest = th_push(&backend, 300);
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        pthread_mutex_lock(&s.mu);
        int64_t last = s.last_message_id;
        pthread_mutex_unlock(&s.mu);
        if (last == newest) break;
        CHECK(th_now_ms() < deadline);
        usleep(5000);
    }
    CHECK_OK(tether_client_close(s.client));
    wait_destroyed(&s);
    CHECK(s.out_of_order == 0 && s.wrong_thread == 0 && s.closed_seen == 1);
    tether_client_free(s.client);
    CHECK(s.destroyed == 1 && s.after_destroy == 0);
    state_destroy(&s);
}

/* Frees the client from inside its first MESSAGE callback. */
static void on_event_free_inside(void *ctx, const tether_event *ev) {
    state *s = (state *)ctx;
    record(s, ev);
    if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && !s->freed_inside) {
        s->freed_inside = 1;
        tether_client_free(s->client);
        /* The event stays valid until the callback returns. */
        CHECK(tether_event_kind(ev) == TETHER_EVENT_MESSAGE);
    }
}

static void test_free_inside_callback(void) {
    state s;
    state_init(&s);
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_free_inside, &s, on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    wait_destroyed(&s);
    usleep(50000);
    pthread_mutex_lock(&s.mu);
    CHECK(s.freed_inside == 1 && s.destroyed == 1 && s.after_destroy == 0);
    pthread_mutex_unlock(&s.mu);
    state_destroy(&s);
}

/* A slow callback: free from the main thread must wait for it to return. */
static void on_event_slow(void *ctx, const tether_event *ev) {
    state *s = (state *)ctx;
    record(s, ev);
    if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && s->slow_ms) {
        pthread_mutex_lock(&s->mu);
        int ms = s->slow_ms;
        s->slow_ms = 0;
        s->in_callback = 1;
        pthread_mutex_unlock(&s->mu);
        usleep((useconds_t)ms * 1000);
        pthread_mutex_lock(&s->mu);
        s->in_callback = 0;
        s->callback_done = 1;
        pthread_mutex_unlock(&s->mu);
    }
}

static void test_free_waits_for_running_callback(void) {
    state s;
    state_init(&s);
    s.slow_ms = 300;
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_slow, &s, on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        pthread_mutex_lock(&s.mu);
        int in = s.in_callback;
        pthread_mutex_unlock(&s.mu);
        if (in) break;
        CHECK(th_now_ms() < deadline);
        usleep(1000);
    }
    tether_client_free(s.client);
    /* After free returns: the callback finished, destroy ran once, nothing runs later. */
    pthread_mutex_lock(&s.mu);
    CHECK(s.callback_done == 1 && s.in_callback == 0 && s.destroyed == 1);
    int events = s.events;
    pthread_mutex_unlock(&s.mu);
    usleep(100000);
    CHECK(s.events == events && s.after_destroy == 0);
    state_destroy(&s);
}

static void on_event_check_resume(void *ctx, const tether_event *ev) {
    state *s = (state *)ctx;
    int64_t id = tether_event_request_id(ev);
    if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && id < 0 && th_last_taken(s->client) <= id) {
        pthread_mutex_lock(&s->mu);
        s->counted_inside++;
        pthread_mutex_unlock(&s->mu);
    }
    record(s, ev);
}

/* gomuks-rpc.md §7.2: an event counts in the resume state once its callback has returned,
 * not while it runs: a binding's callback may only buffer it for the app. */
static void test_resume_state_counts_an_event_once_its_callback_returned(void) {
    state s;
    state_init(&s);
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_check_resume, &s, on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    wait_flag(&s, &s.init_complete);
    int64_t newest = th_push(&backend, 5);
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    while (th_last_taken(s.client) != newest) {
        CHECK(th_now_ms() < deadline);
        usleep(2000);
    }
    pthread_mutex_lock(&s.mu);
    CHECK(s.counted_inside == 0 && s.last_message_id == newest);
    pthread_mutex_unlock(&s.mu);
    CHECK_OK(tether_client_close(s.client));
    wait_flag(&s, &s.closed_seen);
    tether_client_free(s.client);
    state_destroy(&s);
}

/* The running callback registers a new one while another thread frees the client: refused,
 * since nothing would wait for the new dispatcher, whose destroy(ctx) would run after free
 * returned. */
static state s2; /* static: a late destroy must not write to a dead stack */
static int rereg_status = 12345;
static int rereg_being_freed; /* refused because of the free, not because a callback is set */
static void on_destroy_slow(void *ctx) {
    usleep(300000);
    on_destroy(ctx);
}
static void on_event_rereg(void *ctx, const tether_event *ev) {
    state *s = (state *)ctx;
    record(s, ev);
    if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && !s->freed_inside) {
        s->freed_inside = 1;
        pthread_mutex_lock(&s->mu);
        s->in_callback = 1;
        pthread_mutex_unlock(&s->mu);
        usleep(200000 * th_scale()); /* the main thread is in tether_client_free, waiting for us */
        rereg_status =
            tether_client_set_event_callback(s->client, on_event_in_order, &s2, on_destroy_slow);
        rereg_being_freed = strstr(tether_last_error(), "being freed") != NULL;
    }
}

static void test_set_callback_inside_callback_during_free(void) {
    state s;
    state_init(&s);
    state_init(&s2);
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_rereg, &s, on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    wait_flag(&s, &s.in_callback);
    tether_client_free(s.client);
    CHECK(s.destroyed == 1);
    CHECK(rereg_status == TETHER_ERR_STATE && rereg_being_freed);
    /* The refused registration's destroy ran inside the call, before free returned. */
    CHECK(s2.destroyed == 1);
    state_destroy(&s);
    state_destroy(&s2);
}

/* Poll mode: free with hundreds of undelivered events queued loses nothing to leaks. */
static void test_free_with_events_queued(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    int64_t newest = th_push(&backend, 500);
    (void)newest;
    usleep(200000);
    tether_client_free(c);

    /* Same in callback mode with a callback that never finished consuming. */
    state s;
    state_init(&s);
    s.slow_ms = 200;
    s.client = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(s.client, on_event_slow, &s, on_destroy));
    CHECK_OK(tether_client_connect(s.client));
    wait_flag(&s, &s.init_complete);
    th_push(&backend, 500);
    usleep(100000);
    tether_client_free(s.client);
    CHECK(s.destroyed == 1);
    state_destroy(&s);
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_request_and_close_inside_callback);
    TH_RUN(test_events_in_order_on_one_thread);
    TH_RUN(test_free_inside_callback);
    TH_RUN(test_free_waits_for_running_callback);
    TH_RUN(test_free_with_events_queued);
    TH_RUN(test_set_callback_inside_callback_during_free);
    TH_RUN(test_resume_state_counts_an_event_once_its_callback_returned);
    th_backend_stop(&backend);
    return 0;
}
