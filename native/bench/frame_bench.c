/*
 * frame_bench: the C anchor for the helper daemon's throughput in `fdbridge
 * bench`. Two programs in one binary:
 *
 *   frame_bench server --socket PATH
 *     A single-threaded epoll server that speaks the helper's frames
 *     (src/protocol.ts) with nothing else in the way: HELLO -> READY,
 *     DUP (fds in SCM_RIGHTS) -> DUP_OK (their numbers here; the fds are kept
 *     in the connection's ledger), RELEASE -> RESULT (closes the listed fds
 *     of the ledger), CALL -> RESULT {"value":1}, CLOSE -> CLOSED. A
 *     connection that ends has its ledger closed. No JSON is parsed: that is
 *     what the kernel alone costs per frame. Prints "listening" on stdout once
 *     it listens; runs until a signal ends it, or its stdin (when it can be
 *     polled: a pipe from whoever started it) reaches end of file.
 *
 *   frame_bench load --socket PATH --clients N --mode dup|call --time MS
 *                    [--warmup MS] [--command NAME] [--release K]
 *                    [--min-requests N]
 *     A load generator with N client connections on one epoll loop, each
 *     closed-loop (one request in flight: the next is sent when its reply
 *     has come). After the HELLO/READY handshake of every connection, `warmup`
 *     ms untimed, then at least `time` ms counted, and on until at least N
 *     requests (default 64) completed in the window: on a loaded machine a
 *     short window may otherwise see none. The rate is the requests completed
 *     over the window's real length; the latency of each is send to reply. In dup mode every request is a
 *     DUP of one fd (/dev/null), and once a connection holds K duplicates
 *     (default 64; the bench passes fewer with many clients) on the server it sends one RELEASE of them first (its round
 *     trip costs time, it is not counted as a duplication): the helper's per-
 *     client fd quota is never reached, and the server's fd table stays small.
 *     The same generator drives the helper daemon and the C server, so the
 *     ratio of the two is the servers' difference alone.
 *
 *   Output (load): one JSON object on stdout:
 *     {"clients","mode","requests","seconds","opsPerSec","p50Us","p99Us"}
 *
 * Any unexpected frame (an ERROR, a REFUSED, a reply of the wrong type or
 * id) ends the load generator with status 1 and the frame on stderr: a
 * throughput figure for a server that answered wrongly would be a lie.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "frame_bench"
#include "bench_common.h"

#define HEADER_BYTES 8
/* MAX_FRAME_BYTES of src/protocol.ts. */
#define MAX_FRAME (192 * 1024)

enum {
  HELLO = 1,
  READY = 2,
  REFUSED = 3,
  DUP = 4,
  DUP_OK = 5,
  CALL = 6,
  RESULT = 7,
  ERROR = 8,
  RELEASE = 9,
  CLOSE = 10,
  CLOSED = 11,
};

static unsigned char frame_buf[MAX_FRAME];

static void put_header(unsigned char *b, int type, uint32_t id) {
  b[0] = (unsigned char)type;
  b[1] = b[2] = b[3] = 0;
  memcpy(b + 4, &id, 4); /* little-endian hosts only, as the addon */
}

/* Sends one frame (and `nfds` fds); 0, or -1 with errno. */
static int send_frame(int sock, const unsigned char *data, size_t len, const int *fds, int nfds) {
  union control ctl;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) put_fds(&msg, &ctl, fds, nfds);
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  if ((size_t)n != len) {
    errno = EMSGSIZE;
    return -1;
  }
  return 0;
}

/*
 * Receives one frame into frame_buf; its fds (close-on-exec) into fds.
 * Returns its length, 0 at EOF, -1 with errno (EAGAIN: nothing queued).
 * A truncated frame or fd set closes what came and fails with EMSGSIZE.
 */
static ssize_t recv_frame(int sock, int *fds, int *nfds) {
  union control ctl;
  struct iovec iov = {.iov_base = frame_buf, .iov_len = sizeof frame_buf};
  struct msghdr msg;
  ssize_t n = recv_fds(sock, &msg, &iov, &ctl, MSG_DONTWAIT);
  *nfds = 0;
  if (n <= 0) return n;
  take_fds(&msg, fds, nfds);
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    for (int i = 0; i < *nfds; i++) close(fds[i]);
    *nfds = 0;
    errno = EMSGSIZE;
    return -1;
  }
  return n;
}

static void set_sun(struct sockaddr_un *sa, const char *path) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa->sun_path) {
    fprintf(stderr, "frame_bench: socket path too long: %s\n", path);
    exit(2);
  }
  strcpy(sa->sun_path, path);
}

/* ------------------------------------------------------------------------ */
/* server */

struct conn {
  int fd;
  int *held; /* the ledger: fds received in DUPs and not yet released */
  size_t nheld, cap;
};

static void conn_end(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  for (size_t i = 0; i < c->nheld; i++) close(c->held[i]);
  free(c->held);
  free(c);
}

static void hold(struct conn *c, int fd) {
  if (c->nheld == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 256;
    c->held = realloc(c->held, c->cap * sizeof *c->held);
    if (!c->held) die("realloc");
  }
  c->held[c->nheld++] = fd;
}

/* Closes `fd` if the ledger holds it (the last one moves into its slot). */
static void release(struct conn *c, int fd) {
  for (size_t i = c->nheld; i-- > 0;) {
    if (c->held[i] == fd) {
      close(fd);
      c->held[i] = c->held[--c->nheld];
      return;
    }
  }
}

/* Serves every frame queued on `c`; returns -1 when the connection is to end. */
static int serve_readable(struct conn *c) {
  static unsigned char reply[HEADER_BYTES + 4 * MAX_FDS];
  static char json[64];
  int fds[MAX_FDS], nfds;
  for (;;) {
    ssize_t n = recv_frame(c->fd, fds, &nfds);
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) return -1;
    if (n < HEADER_BYTES) goto violation;
    int type = frame_buf[0];
    uint32_t id;
    memcpy(&id, frame_buf + 4, 4);
    if (type != DUP && nfds > 0) goto violation;
    size_t len = HEADER_BYTES;
    switch (type) {
      case HELLO:
        put_header(reply, READY, id);
        len += (size_t)snprintf(json, sizeof json, "{\"pid\":%d,\"threadId\":0}", (int)getpid());
        memcpy(reply + HEADER_BYTES, json, len - HEADER_BYTES);
        break;
      case DUP:
        if (nfds == 0 || n != HEADER_BYTES) goto violation;
        put_header(reply, DUP_OK, id);
        for (int i = 0; i < nfds; i++) {
          hold(c, fds[i]);
          memcpy(reply + len, &fds[i], 4);
          len += 4;
        }
        break;
      case RELEASE:
        if ((n - HEADER_BYTES) % 4 != 0) goto violation;
        for (ssize_t off = HEADER_BYTES; off < n; off += 4) {
          int fd;
          memcpy(&fd, frame_buf + off, 4);
          release(c, fd);
        }
        put_header(reply, RESULT, id);
        memcpy(reply + len, "{}", 2);
        len += 2;
        break;
      case CALL:
        put_header(reply, RESULT, id);
        memcpy(reply + len, "{\"value\":1}", 11);
        len += 11;
        break;
      case CLOSE:
        for (size_t i = 0; i < c->nheld; i++) close(c->held[i]);
        c->nheld = 0;
        put_header(reply, CLOSED, id);
        break;
      default:
        goto violation;
    }
    if (send_frame(c->fd, reply, len, NULL, 0) < 0) return -1;
  }
violation:
  for (int i = 0; i < nfds; i++) close(fds[i]);
  return -1;
}

static _Noreturn void run_server(const char *path) {
  int ls = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (ls < 0) die("socket");
  struct sockaddr_un sa;
  set_sun(&sa, path);
  unlink(path);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
  if (listen(ls, 1024) < 0) die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data = {.ptr = NULL}};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0) die("epoll_ctl");
  /* The end of file of stdin (a pipe from whoever started us) ends the
     server, so it dies with that process however it ends. stdin that
     cannot be polled (/dev/null, a regular file: EPERM) is not watched. */
  static char stdin_tag;
  struct epoll_event in = {.events = EPOLLIN, .data = {.ptr = &stdin_tag}};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &in) < 0 && errno != EPERM) die("epoll_ctl(stdin)");
  printf("listening\n");
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int k = epoll_wait(ep, evs, 256, -1);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) die("epoll_wait");
    for (int i = 0; i < k; i++) {
      if (evs[i].data.ptr == &stdin_tag) {
        char buf[256];
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
          unlink(path);
          exit(0);
        }
        continue;
      }
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        for (;;) {
          int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (fd < 0) break;
          c = calloc(1, sizeof *c);
          if (!c) die("calloc");
          c->fd = fd;
          struct epoll_event cev = {.events = EPOLLIN, .data = {.ptr = c}};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) die("epoll_ctl");
        }
        continue;
      }
      if (serve_readable(c) < 0) conn_end(ep, c);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* load generator */

struct client {
  int fd;
  uint32_t id;       /* of the request in flight */
  int type;          /* the request in flight: DUP, CALL or RELEASE */
  double sent;       /* when it was sent */
  int *given;        /* server-side numbers of this client's duplicates */
  int ngiven;
};

static int mode_dup;
static int devnull_fd;
static long release_at = 64;
static long min_requests = 64;

static double *samples;
static size_t nsamples, samples_cap;

static void sample(double us) {
  if (nsamples == samples_cap) {
    samples_cap = samples_cap ? samples_cap * 2 : 65536;
    samples = realloc(samples, samples_cap * sizeof *samples);
    if (!samples) die("realloc");
  }
  samples[nsamples++] = us;
}

static void issue(struct client *c) {
  static unsigned char buf[HEADER_BYTES + 4 * MAX_FDS + 64];
  size_t len = HEADER_BYTES;
  c->id++;
  int nfds = 0;
  if (mode_dup && c->ngiven >= release_at) {
    c->type = RELEASE;
    put_header(buf, RELEASE, c->id);
    memcpy(buf + len, c->given, 4 * (size_t)c->ngiven);
    len += 4 * (size_t)c->ngiven;
    c->ngiven = 0;
  } else if (mode_dup) {
    c->type = DUP;
    put_header(buf, DUP, c->id);
    nfds = 1;
  } else {
    static const char call[] = "{\"method\":\"measure\",\"args\":[\"x\"]}";
    c->type = CALL;
    put_header(buf, CALL, c->id);
    memcpy(buf + len, call, sizeof call - 1);
    len += sizeof call - 1;
  }
  c->sent = now_us();
  if (send_frame(c->fd, buf, len, &devnull_fd, nfds) < 0) die("sendmsg (request)");
}

static void bad_reply(const char *why, ssize_t n) {
  fprintf(stderr, "frame_bench: %s (frame type %d, %zd bytes): %.*s\n", why, n > 0 ? frame_buf[0] : -1, n,
          n > HEADER_BYTES ? (int)(n - HEADER_BYTES) : 0, (const char *)frame_buf + HEADER_BYTES);
  exit(1);
}

/* Connects and does the HELLO/READY handshake, blocking. */
static int open_client(const char *path, const char *command) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  struct sockaddr_un sa;
  set_sun(&sa, path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
  unsigned char hello[HEADER_BYTES + 128];
  put_header(hello, HELLO, 1);
  int k = snprintf((char *)hello + HEADER_BYTES, 120, "{\"version\":1,\"command\":{\"name\":\"%s\"}}", command);
  struct iovec iov = {.iov_base = hello, .iov_len = HEADER_BYTES + (size_t)k};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) die("sendmsg (HELLO)");
  ssize_t n;
  do n = recv(fd, frame_buf, sizeof frame_buf, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) die("recv (READY)");
  if (n < HEADER_BYTES || frame_buf[0] != READY) bad_reply("HELLO not answered with READY", n);
  if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl(O_NONBLOCK)");
  return fd;
}

static int run_load(const char *path, const char *command, long nclients, long time_ms, long warmup_ms) {
  devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull_fd < 0) die("open /dev/null");
  struct client *cs = calloc((size_t)nclients, sizeof *cs);
  if (!cs) die("calloc");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (long i = 0; i < nclients; i++) {
    cs[i].fd = open_client(path, command);
    cs[i].given = malloc(sizeof(int) * (size_t)(release_at + 1));
    if (!cs[i].given) die("malloc");
    struct epoll_event ev = {.events = EPOLLIN, .data = {.ptr = &cs[i]}};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
  }
  for (long i = 0; i < nclients; i++) issue(&cs[i]);
  double start = now_us() + (double)warmup_ms * 1e3, end = start + (double)time_ms * 1e3;
  size_t done = 0;
  double stopped = end;
  int fds[MAX_FDS], nfds;
  struct epoll_event evs[512];
  for (int stop = 0; !stop;) {
    int k = epoll_wait(ep, evs, 512, 10000);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) die("epoll_wait");
    if (k == 0) {
      fprintf(stderr, "frame_bench: no reply for 10 s\n");
      return 1;
    }
    for (int i = 0; i < k; i++) {
      struct client *c = evs[i].data.ptr;
      ssize_t n = recv_frame(c->fd, fds, &nfds);
      if (n < 0 && errno == EAGAIN) continue;
      if (n < 0) die("recvmsg (reply)");
      if (n == 0) bad_reply("the server closed the connection", n);
      for (int j = 0; j < nfds; j++) close(fds[j]);
      if (nfds > 0) bad_reply("fds arrived with a reply", n);
      uint32_t id;
      memcpy(&id, frame_buf + 4, 4);
      int want = c->type == DUP ? DUP_OK : RESULT;
      if (n < HEADER_BYTES || frame_buf[0] != want || id != c->id) bad_reply("unexpected reply", n);
      double t = now_us();
      if (c->type == DUP) {
        if (n != HEADER_BYTES + 4) bad_reply("DUP_OK of one fd expected", n);
        memcpy(&c->given[c->ngiven++], frame_buf + HEADER_BYTES, 4);
      }
      if (c->type != RELEASE && c->sent >= start) {
        done++;
        sample(t - c->sent);
      }
      if (t >= end && (long)done >= min_requests) {
        stop = 1;
        stopped = t;
      } else {
        issue(c);
      }
    }
  }
  double seconds = (stopped - start) / 1e6;
  qsort(samples, nsamples, sizeof *samples, cmp_double);
  printf("{\"clients\":%ld,\"mode\":\"%s\",\"requests\":%zu,\"seconds\":%.4f,\"opsPerSec\":%.1f,\"p50Us\":%.3f,\"p99Us\":%.3f}\n",
         nclients, mode_dup ? "dup" : "call", done, seconds, (double)done / seconds, quantile(samples, nsamples, 0.5),
         quantile(samples, nsamples, 0.99));
  /* Closing the sockets ends the connections; the server closes what each still holds. */
  for (long i = 0; i < nclients; i++) close(cs[i].fd);
  return 0;
}

int main(int argc, char **argv) {
  const char *usage =
      "usage: frame_bench server --socket PATH\n"
      "       frame_bench load --socket PATH --clients N --mode dup|call --time MS [--warmup MS] [--command NAME] [--release K]\n"
      "                        [--min-requests N]\n";
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *path = NULL, *command = "bench", *mode = "dup";
  long clients = 1, time_ms = 200, warmup_ms = 50;
  for (int i = 2; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fputs(usage, stderr);
      return 2;
    }
    if (!strcmp(a, "--socket")) path = v;
    else if (!strcmp(a, "--command")) command = v;
    else if (!strcmp(a, "--mode")) mode = v;
    else if (!strcmp(a, "--clients")) clients = parse_long(a, v, 1, 4096);
    else if (!strcmp(a, "--time")) time_ms = parse_long(a, v, 1, 3600000);
    else if (!strcmp(a, "--warmup")) warmup_ms = parse_long(a, v, 0, 3600000);
    else if (!strcmp(a, "--release")) release_at = parse_long(a, v, 1, MAX_FDS);
    else if (!strcmp(a, "--min-requests")) min_requests = parse_long(a, v, 1, 100000000);
    else {
      fprintf(stderr, "frame_bench: unknown option %s\n%s", a, usage);
      return 2;
    }
  }
  if (!path) {
    fputs(usage, stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (!strcmp(argv[1], "server")) run_server(path);
  if (strcmp(argv[1], "load") != 0 || (strcmp(mode, "dup") != 0 && strcmp(mode, "call") != 0)) {
    fputs(usage, stderr);
    return 2;
  }
  mode_dup = !strcmp(mode, "dup");
  return run_load(path, command, clients, time_ms, warmup_ms);
}
