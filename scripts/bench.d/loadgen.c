/*
 * A fixed-rate HTTP/1.1 keep-alive client for scripts/bench's churn and failover phases (127.0.0.1 only): the
 * same command line, schedule, retry rule and output as loadgen.py, in C, so that the latency it reports is the
 * proxy's and not the client's (loadgen.py's own asyncio loop costs about 1 ms per request at p50 and several at
 * p99, which buried a proxy's stalls; see docs/benchmarks.md, "A client that can see a stall").
 *
 * --connections keep-alive connections; request j of the run is due at start + j / rate and goes out on connection
 * j mod connections, once the previous request on that connection has been answered (an open-loop client: the
 * latency is counted from the due time, so a stall delays the requests queued behind it and counts for them). A
 * request that finds its reused connection closed before any byte of the response arrived is sent once more on a
 * new connection (as HTTP clients do for idempotent requests) and counted as a retry.
 *
 * Output: {"started": <wall-clock time the first request is due>} on stdout at the start; one line per request to
 * --log ("<due time, us since the epoch>\t<status or -1>\t<us from due to the response's end>\t<us from the write
 * to the response's end>"); a JSON summary on stdout at the end. SIGTERM or SIGINT ends the run early (requests in
 * flight still complete, each bounded by --timeout). The run is bounded by --duration and --max-requests.
 *
 * One thread, epoll, a timerfd for the schedule. Build: cc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

enum { E_REFUSED, E_RESET, E_CLOSED, E_TIMEOUT, E_OTHER, E_BAD_RESPONSE, E_COUNT };
static const char *ERROR_NAMES[E_COUNT] = {"ConnectionRefusedError", "ConnectionResetError", "Closed",
                                           "TimeoutError",           "OSError",              "ValueError"};

typedef struct {
    long long wall_us;
    int status;
    long long latency_us, sent_us;
} Record;

typedef struct {
    int fd;          /* -1: no connection */
    int reused;      /* the connection has answered a request before */
    long long next;  /* the index of this connection's next request */
    int busy;        /* a request is in flight */
    int attempt;     /* 0, or 1 for the retry on a new connection */
    int stale;       /* the server closed this connection while it was idle */
    double due;      /* due time of the request in flight (monotonic s) */
    double sent;     /* when it was written */
    char buf[BUF];
    size_t len;      /* bytes of the response read so far */
} Conn;

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int port, connections = 16, max_requests = 2000000;
static double rate, duration, timeout_s = 10.0;
static const char *host, *path = "/", *log_path;
static char request[4096];
static size_t request_len;
static int epfd;
static long errors[E_COUNT];
static long retries, connects;
static double late_max;
static Record *records;
static long n_records;

static void usage(void) {
    fprintf(stderr, "usage: loadgen --port P --host H [--path /] [--connections 16] --rate R --duration S "
                    "[--max-requests N] [--timeout S] --log FILE\n");
    exit(2);
}

static int open_conn(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -E_OTHER - 1;
    struct timeval tv = {(time_t)timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connects++;
    /* A blocking connect: on loopback it completes or is refused at once. */
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return e == ECONNREFUSED ? -E_REFUSED - 1 : (e == EINPROGRESS || e == EAGAIN) ? -E_TIMEOUT - 1 : -E_OTHER - 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void drop_conn(Conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->reused = 0;
    c->len = 0;
}

static void finish(Conn *c, int status, int error) {
    double end = mono();
    if (n_records < max_requests) {
        Record *r = &records[n_records++];
        r->wall_us = 0; /* set by the caller's clock below */
        r->status = status;
        r->latency_us = (long long)((end - c->due) * 1e6);
        r->sent_us = (long long)((end - c->sent) * 1e6);
        r->wall_us = (long long)(c->due * 1e6); /* monotonic for now; made wall-clock at the end */
    }
    if (error >= 0) errors[error]++;
    c->busy = 0;
    c->attempt = 0;
    c->len = 0;
    c->next += connections;
}

/* Writes the request on c (connecting first when needed). Returns 0, or -1 when the request failed. */
static int send_request(Conn *c) {
    if (c->stale) {
        c->stale = 0;
        retries++;
    }
    for (;;) {
        if (c->fd < 0) {
            int fd = open_conn();
            if (fd < 0) {
                finish(c, -1, -fd - 1);
                return -1;
            }
            c->fd = fd;
            c->reused = 0;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        }
        c->sent = mono();
        c->len = 0;
        ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);
        if (n == (ssize_t)request_len) return 0;
        /* A reused connection the server has closed: once more on a new one. */
        int reused = c->reused;
        drop_conn(c);
        if (reused && c->attempt == 0) {
            c->attempt = 1;
            retries++;
            continue;
        }
        finish(c, -1, n < 0 && errno == ECONNRESET ? E_RESET : E_OTHER);
        return -1;
    }
}

/* Whether buf holds a whole response: 1 yes (status, keep-alive set), 0 not yet, -1 malformed. */
static int parse(const char *buf, size_t len, int eof, int *status, int *keep) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - buf) + 4;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(buf + 9);
    *keep = buf[7] == '1';
    long long length = -1;
    int chunked = 0;
    for (const char *line = memchr(buf, '\n', head) + 1; line < buf + head - 2;) {
        const char *eol = memchr(line, '\n', (size_t)(buf + head - line));
        if (!eol) break;
        if (strncasecmp(line, "content-length:", 15) == 0) length = atoll(line + 15);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0 && memmem(line, (size_t)(eol - line), "chunked", 7))
            chunked = 1;
        else if (strncasecmp(line, "connection:", 11) == 0) {
            if (memmem(line, (size_t)(eol - line), "close", 5)) *keep = 0;
            else if (memmem(line, (size_t)(eol - line), "keep-alive", 10)) *keep = 1;
        }
        line = eol + 1;
    }
    if (chunked) {
        size_t at = head;
        for (;;) {
            const char *eol = memmem(buf + at, len - at, "\r\n", 2);
            if (!eol) return 0;
            long size = strtol(buf + at, NULL, 16);
            if (size < 0) return -1;
            at = (size_t)(eol - buf) + 2 + (size_t)size + 2;
            if (at > len) return 0;
            if (size == 0) return 1; /* no trailers expected */
        }
    }
    if (length >= 0) return len >= head + (size_t)length ? 1 : 0;
    if (*status == 204 || *status == 304 || *status < 200) return 1;
    *keep = 0;
    return eof ? 1 : 0; /* the body ends when the server closes */
}

static void on_readable(Conn *c) {
    int eof = 0, reset = 0;
    for (;;) {
        if (c->len == BUF) break;
        ssize_t n = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == 0) eof = 1;
        else if (errno == ECONNRESET) reset = 1;
        else if (errno != EAGAIN && errno != EINTR) reset = 1;
        break;
    }
    if (!c->busy) {
        /* The server closed the idle connection (nginx's old workers do on a reload). loadgen.py notices that
         * only when its next request finds the connection closed, and retries: the next request counts a retry. */
        drop_conn(c);
        c->stale = 1;
        return;
    }
    int status = -1, keep = 0;
    int r = parse(c->buf, c->len, eof || reset, &status, &keep);
    if (r == 1) {
        if (!keep || eof) drop_conn(c);
        else c->reused = 1;
        finish(c, status, -1);
        return;
    }
    if (r < 0 || c->len == BUF) {
        drop_conn(c);
        finish(c, -1, E_BAD_RESPONSE);
        return;
    }
    if (eof || reset) {
        int before_any_byte = c->len == 0, reused = c->reused;
        drop_conn(c);
        if (before_any_byte && reused && c->attempt == 0) {
            c->attempt = 1;
            retries++;
            send_request(c);
            return;
        }
        finish(c, -1, before_any_byte ? (reset ? E_RESET : E_CLOSED) : E_OTHER);
    }
}

static void arm(int tfd, double at) {
    struct itimerspec its = {0};
    if (at > 0) {
        its.it_value.tv_sec = (time_t)at;
        its.it_value.tv_nsec = (long)((at - (double)(time_t)at) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--path")) path = v;
        else if (!strcmp(k, "--connections")) connections = atoi(v);
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--max-requests")) max_requests = atoi(v);
        else if (!strcmp(k, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(k, "--log")) log_path = v;
        else usage();
    }
    if (!port || !host || !log_path || rate <= 0 || duration <= 0 || connections < 1 || max_requests < 1) usage();
    request_len = (size_t)snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
    if (request_len >= sizeof request) usage();
    long cap = (long)(rate * duration) + connections + 1;
    if (cap > max_requests) cap = max_requests;
    records = calloc((size_t)cap, sizeof *records);
    Conn *conns = calloc((size_t)connections, sizeof *conns);
    if (!records || !conns) return 1;
    max_requests = (int)cap;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

    double t0 = mono() + 0.05, wall_t0 = wall() + 0.05, deadline = t0 + duration;
    for (int k = 0; k < connections; k++) {
        conns[k].fd = -1;
        conns[k].next = k;
    }
    /* The caller starts its clock on this line: the first request is due then. */
    printf("{\"started\": %.6f}\n", wall_t0);
    fflush(stdout);
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);

    long sent_total = 0;
    for (;;) {
        double now = mono();
        /* Send every due request whose connection is idle; find the next due time and the oldest in flight. */
        double next_due = 0, oldest = 0;
        int in_flight = 0;
        for (int k = 0; k < connections; k++) {
            Conn *c = &conns[k];
            if (c->busy) {
                if (now - c->sent > timeout_s) {
                    drop_conn(c);
                    finish(c, -1, E_TIMEOUT);
                } else {
                    in_flight++;
                    if (!oldest || c->sent < oldest) oldest = c->sent;
                    continue;
                }
            }
            if (stopping || sent_total >= max_requests) continue;
            double due = t0 + (double)c->next / rate;
            if (due >= deadline) continue;
            if (due <= now) {
                if (now - due > late_max) late_max = now - due;
                c->busy = 1;
                c->due = due;
                sent_total++;
                if (send_request(c) == 0) {
                    in_flight++;
                    if (!oldest || c->sent < oldest) oldest = c->sent;
                } else {
                    /* failed at once: its next request may be due already */
                    due = t0 + (double)c->next / rate;
                    if (due < deadline && (!next_due || due < next_due)) next_due = due;
                }
                continue;
            }
            if (!next_due || due < next_due) next_due = due;
        }
        if (!in_flight && !next_due) break;
        double wake = next_due;
        if (in_flight) {
            double t = oldest + timeout_s;
            if (!wake || t < wake) wake = t;
        }
        arm(tfd, wake);
        struct epoll_event evs[64];
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                unsigned long long expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0) { /* spurious wake-up */
                }
                continue;
            }
            Conn *c = evs[i].data.ptr;
            if (c->fd >= 0) on_readable(c);
        }
    }
    double elapsed = (mono() < deadline ? mono() : deadline) - t0;
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);

    FILE *f = fopen(log_path, "w");
    if (!f) {
        perror(log_path);
        return 1;
    }
    long completed = 0;
    for (long i = 0; i < n_records; i++) {
        Record *r = &records[i];
        long long wall_us = (long long)((wall_t0 + ((double)r->wall_us / 1e6 - t0)) * 1e6);
        fprintf(f, "%lld\t%d\t%lld\t%lld\n", wall_us, r->status, r->latency_us, r->sent_us);
        if (r->status != -1) completed++;
    }
    fclose(f);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) /
                     1e6;
    printf("{\"requests\": %ld, \"completed\": %ld, \"elapsed\": %.3f, \"retries\": %ld, \"connects\": %ld, "
           "\"errors\": {",
           n_records, completed, elapsed, retries, connects);
    int first = 1;
    for (int e = 0; e < E_COUNT; e++) {
        if (!errors[e]) continue;
        printf("%s\"%s\": %ld", first ? "" : ", ", ERROR_NAMES[e], errors[e]);
        first = 0;
    }
    printf("}, \"late_ms_max\": %.1f, \"client_cpu_s\": %.3f}\n", late_max * 1000, cpu);
    return 0;
}
