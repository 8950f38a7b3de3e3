/*
 * Fork guard (ARCHITECTURE.md "Runtime and threads"): after fork() in a process that created a
 * client, every call in the child fails with TETHER_ERR_FORKED and touches nothing; the
 * parent keeps working. A child forked before any client existed uses the library as usual,
 * its logging included.
 */
#include "harness.h"

static th_backend backend;

static int child_checks(void *client) {
    tether_client *c = (tether_client *)client;
    int bad = 0;
    tether_config *cfg = NULL;
    tether_event *ev = NULL;
    int64_t id = 0;
#define EXPECT(cond)                                                                       \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "child: %s failed\n", #cond);                                  \
            bad = 1;                                                                       \
        }                                                                                  \
    } while (0)
    EXPECT(tether_client_request(c, "echo", NULL, 0, &id) == TETHER_ERR_FORKED);
    EXPECT(id == 0);
    EXPECT(tether_client_poll(c, 0, &ev) == TETHER_ERR_FORKED);
    EXPECT(tether_client_close(c) == TETHER_ERR_FORKED);
    EXPECT(tether_config_new(&cfg) == TETHER_ERR_FORKED);
    EXPECT(cfg == NULL);
    EXPECT(tether_client_event_fd(c) == -1);
    EXPECT(strstr(tether_last_error(), "fork") != NULL);
    /* Pure functions keep working. */
    EXPECT(strcmp(tether_status_str(TETHER_ERR_FORKED), "used after fork()") == 0);
    EXPECT(strcmp(tether_version(), TETHER_VERSION_STRING) == 0);
    tether_client_free(c); /* does nothing in the child */
#undef EXPECT
    return bad;
}

/* Runs `checks(arg)` in a forked child; fails the test if it reports a problem or hangs. The
 * verdict travels through a pipe, not the exit code: under valgrind the child's exit code
 * reports the parent's memory it inherited and, by design, never frees. */
static void in_child(int (*checks)(void *), void *arg) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        const char *verdict = checks(arg) ? "bad" : "ok!";
        if (write(fds[1], verdict, 3) != 3) _exit(3);
        _exit(0);
    }
    close(fds[1]);
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    if (poll(&p, 1, 30000 * th_scale()) != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        CHECK(!"the child hung");
    }
    char verdict[4] = {0};
    CHECK(read(fds[0], verdict, 3) == 3);
    close(fds[0]);
    CHECK(strcmp(verdict, "ok!") == 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
}

static volatile int parent_records, child_records;
static void on_parent_log(void *ctx, const tether_log_record *r) { (void)ctx; (void)r; parent_records++; }
static void on_child_log(void *ctx, const tether_log_record *r) { (void)ctx; (void)r; child_records++; }

/* The child of a process that installed a log callback but created no client (a daemon that
 * forks after setting up its logging): the library works there, the parent's callback is not
 * called (its thread did not survive the fork), a callback installed in the child gets the
 * child's records, and replacing or removing it returns instead of waiting for the parent's
 * log thread. */
static int logging_child(void *unused) {
    (void)unused;
    int bad = 0;
    if (tether_set_log_callback(on_child_log, NULL, NULL, TETHER_LOG_DEBUG) != TETHER_OK) bad = 1;
    tether_client *c = th_client_from(th_config(&backend));
    if (tether_client_connect(c) != TETHER_OK) bad = 1;
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    th_close_and_free(c);
    /* Removing the callback returns once it had its last record: count after that. */
    if (tether_set_log_callback(NULL, NULL, NULL, 0) != TETHER_OK) bad = 1;
    if (child_records == 0) bad = 1;
    if (parent_records != 0) bad = 1;
    return bad;
}

static void test_child_of_a_logging_parent_without_clients(void) {
    CHECK_OK(tether_set_log_callback(on_parent_log, NULL, NULL, TETHER_LOG_DEBUG));
    in_child(logging_child, NULL);
    /* The parent's own callback is still installed and is removed as usual. */
    CHECK_OK(tether_set_log_callback(NULL, NULL, NULL, 0));
}

static void test_child_gets_forked_error(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    in_child(child_checks, c);
    /* The parent is unaffected. */
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)"{}", 2, &id));
    tether_event *ev = th_wait_response(c, id, 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    tether_event_free(ev);
    th_close_and_free(c);
}

int main(void) {
    th_backend_start(&backend, NULL);
    /* First: the other test creates a client, after which a child can use nothing. */
    TH_RUN(test_child_of_a_logging_parent_without_clients);
    TH_RUN(test_child_gets_forked_error);
    th_backend_stop(&backend);
    return 0;
}
