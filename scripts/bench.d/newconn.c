/*
 * Preloaded into h2load by scripts/bench (LD_PRELOAD) for the TLS scenarios. Two things h2load 1.52 cannot do:
 *
 * 1. A full TLS handshake on every new connection. h2load keeps the SSL object of a connection that was shut down
 *    cleanly and uses it for its next connection, so OpenSSL offers the previous session (a TLS 1.3 ticket) and a
 *    server that accepts it resumes. Making SSL_shutdown report an unfinished shutdown makes h2load free the
 *    object; its next connection starts from a new one, with no session to offer.
 *
 * 2. Latency with the handshake in it. h2load times a request from when it is written, after the handshake.
 *    With BENCH_CONN_LOG set, every connection appends "<connect() time, us since the epoch>\t<us from connect()
 *    to the TLS shutdown>" to that file. With `Connection: close` the server closes after its one response and
 *    h2load shuts the connection down right then, so that time is connect + handshake + request + response.
 *
 * h2load is single-threaded here (-t1), so the table below needs no lock.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_FD 65536

static struct timespec started_mono[MAX_FD];
static long long started_wall_us[MAX_FD];
static FILE *conn_log;
static int conn_log_opened;

static long long us(const struct timespec *t) { return (long long)t->tv_sec * 1000000LL + t->tv_nsec / 1000; }

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real)(int, const struct sockaddr *, socklen_t);
  if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
  if (fd >= 0 && fd < MAX_FD) {
    struct timespec wall;
    clock_gettime(CLOCK_MONOTONIC, &started_mono[fd]);
    clock_gettime(CLOCK_REALTIME, &wall);
    started_wall_us[fd] = us(&wall);
  }
  return real(fd, addr, len);
}

int SSL_shutdown(void *ssl) {
  static int (*real)(void *);
  static int (*get_fd)(void *);
  if (!real) {
    real = (int (*)(void *))dlsym(RTLD_NEXT, "SSL_shutdown");
    get_fd = (int (*)(void *))dlsym(RTLD_NEXT, "SSL_get_fd");
  }
  if (!conn_log_opened) {
    const char *path = getenv("BENCH_CONN_LOG");
    conn_log_opened = 1;
    if (path && *path) conn_log = fopen(path, "a");
  }
  int fd = get_fd ? get_fd(ssl) : -1;
  if (conn_log && fd >= 0 && fd < MAX_FD && started_wall_us[fd]) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    fprintf(conn_log, "%lld\t%lld\n", started_wall_us[fd], us(&now) - us(&started_mono[fd]));
    started_wall_us[fd] = 0;
  }
  real(ssl);
  return 0;
}
