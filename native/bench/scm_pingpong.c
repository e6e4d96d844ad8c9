/*
 * scm_pingpong: the raw-C anchor for `fdbridge bench`. What one fd round trip
 * between two processes costs when nothing but the kernel is in the way.
 *
 * The parent forks; the two share a SOCK_SEQPACKET socketpair. Each round
 * trip is one sendmsg(2) carrying K fds in one SCM_RIGHTS cmsg (K = 1, or 253
 * in batch mode) and one blocking recvmsg(2) of the peer's 1-byte ack. The
 * peer receives with MSG_CMSG_CLOEXEC (as the library does), acks, then
 * closes what it received. Acking before closing mirrors the library, whose
 * far side answers a DUP before anything closes the duplicates; it also makes
 * this baseline the faster (stricter) one.
 *
 * Blocking sockets, no poll: the cheapest possible shape, deliberately. The
 * library's sockets are non-blocking and driven by epoll through libuv, so the
 * gap between the two is what the event loop and JavaScript cost.
 *
 * Output: one JSON object on stdout, times in microseconds, from one
 * clock_gettime(CLOCK_MONOTONIC) pair around each round trip. Percentiles are
 * linearly interpolated between order statistics, as tinybench does.
 *
 * The ack byte carries the CPU the peer ran on (sched_getcpu), so the output
 * says how many round trips stayed on one CPU ("sameCpuFraction"). On a VM
 * that decides the result: a wake-up of the other, idle vCPU costs tens of
 * microseconds (an IPI through the hypervisor), one on the same CPU a few.
 *
 * --event-loop runs both sides the way libuv (and so Node) does: non-blocking
 * sockets, an epoll_wait before every read, reads until EAGAIN, and the extra
 * zero-timeout epoll_wait that Node's idle-time metrics add before each
 * blocking one. Its gap to the blocking mode is the cost of an event loop
 * itself, before any JavaScript runs.
 *
 * --peer-event-loop runs only the peer that way, as the library's far side
 * serves a blocking dupFileDescriptorSync (one read a wake-up, as it stops
 * reading after a DUP it answered in C++): the floor of a blocking client
 * against a far side on an event loop.
 *
 * --pidfd moves the fds the way the pidfd transport does, by number: the
 * message carries the K numbers as data, and the peer pulls each with
 * pidfd_getfd(2) (through a pidfd of the parent opened once), acks, then
 * closes them. No pins, no renumbering: the kernel's floor for pulling.
 *
 * --keep: the peer keeps what arrived and closes it only when the parent,
 * after taking its sample, sends a close request (one byte 'c', no fds) and
 * waits for its ack: untimed, as `fdbridge bench` closes the far side's
 * duplicates of a batch in an untimed call. Without it the peer's closes
 * (about a microsecond of kernel time per fd here) run after its ack: inside
 * the round trip when both ends share a CPU (the parent runs again only once
 * the peer sleeps), beside the parent's next send when they do not, which
 * hides what waking the other CPU costs. With it the anchor times what the
 * library's batch case times.
 *
 * usage: scm_pingpong [--fds K] [--iterations N] [--time MS] [--warmup N] [--samples] [--event-loop] [--peer-event-loop] [--pidfd] [--keep]
 *   runs at least N round trips (default 10000) and at least MS ms (default 0)
 *   after N warm-up round trips (default 1000); --samples adds every sample
 *   ("samplesUs", in the order measured) so that a caller can pool rounds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../syscall_numbers.h"
#define BENCH_NAME "scm_pingpong"
#include "bench_common.h"

/* --pidfd: the numbers travel as data and the peer pulls them. */
static int pidfd_mode = 0;

/* --keep: the peer closes what arrived only on a close request (CLOSE_REQUEST, no fds). */
static int keep_mode = 0;
#define CLOSE_REQUEST 'c'

static void send_fds(int sock, const int *fds, int nfds) {
  if (pidfd_mode) {
    ssize_t n;
    do n = send(sock, fds, sizeof(int) * (size_t)nfds, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)(sizeof(int) * (size_t)nfds)) die("send (numbers)");
    return;
  }
  union control ctl;
  char byte = 'x';
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  put_fds(&msg, &ctl, fds, nfds);
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != 1) die("sendmsg");
}

/* --event-loop: wait as libuv does (with Node's idle-time metrics on). */
static int event_loop = 0;
/*
 * --peer-event-loop: only the peer does, as the library's far side serves a
 * blocking dupFileDescriptorSync: one read a wake-up (it stops after a DUP
 * answered in C++), no read until EAGAIN.
 */
static int peer_event_loop = 0;

static void wait_readable(int ep) {
  struct epoll_event ev;
  int r;
  do r = epoll_wait(ep, &ev, 1, 0); /* the metrics' non-blocking poll */
  while (r < 0 && errno == EINTR);
  if (r > 0) return;
  do r = epoll_wait(ep, &ev, 1, -1);
  while (r < 0 && errno == EINTR);
  if (r < 0) die("epoll_wait");
}

static int make_epoll(int sock) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = sock}};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev) < 0) die("epoll_ctl");
  return ep;
}

/* Returns the CPU the peer acked from. */
static int recv_ack(int sock, int ep) {
  unsigned char byte;
  ssize_t n;
  if (event_loop) wait_readable(ep);
  do n = recv(sock, &byte, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n != 1) die("recv (ack)");
  if (event_loop) {
    /* Read until EAGAIN, as an event loop must. */
    unsigned char more;
    do n = recv(sock, &more, 1, 0);
    while (n < 0 && errno == EINTR);
    if (n >= 0 || errno != EAGAIN) die("recv (ack, expected EAGAIN)");
  }
  return byte;
}

/* The peer: receive, ack, close (with --keep: on the close request that follows); until EOF. */
static void peer(int sock) {
  union control ctl;
  char byte;
  int ep = event_loop || peer_event_loop ? make_epoll(sock) : -1;
  if (peer_event_loop && fcntl(sock, F_SETFL, O_NONBLOCK) < 0) die("fcntl(O_NONBLOCK)");
  int parent = -1;
  if (pidfd_mode) {
    parent = (int)syscall(SYS_pidfd_open, getppid(), 0);
    if (parent < 0) die("pidfd_open");
  }
  int numbers[MAX_FDS];
  int kept[MAX_FDS];
  int nkept = 0;
  int drained = 1;
  for (;;) {
    if ((event_loop && drained) || peer_event_loop) wait_readable(ep);
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    if (pidfd_mode) {
      iov.iov_base = numbers;
      iov.iov_len = sizeof numbers;
    }
    struct msghdr msg;
    ssize_t n = recv_fds(sock, &msg, &iov, &ctl, 0);
    if (n == 0) _exit(0); /* EOF: the parent is done */
    if (n < 0 && event_loop && errno == EAGAIN) {
      drained = 1; /* read until EAGAIN; now back to the poll */
      continue;
    }
    if (n < 0) die("recvmsg (peer)");
    drained = 0;
    if (msg.msg_flags & MSG_CTRUNC) {
      fprintf(stderr, "scm_pingpong: MSG_CTRUNC in the peer\n");
      _exit(1);
    }
    int fds[MAX_FDS];
    int nfds = 0;
    /* A batch is 1 byte 'x' with fds, or (--pidfd) whole numbers: never 1 byte 'c' alone. */
    const unsigned char *first = pidfd_mode ? (const unsigned char *)numbers : (const unsigned char *)&byte;
    int close_request = keep_mode && n == 1 && *first == CLOSE_REQUEST;
    if (close_request) {
      take_fds(&msg, fds, &nfds);
      if (nfds != 0) {
        fprintf(stderr, "scm_pingpong: fds with a close request\n");
        _exit(1);
      }
      for (int i = 0; i < nkept; i++) close(kept[i]);
      nkept = 0;
    } else if (pidfd_mode) {
      for (int i = 0; i < (int)(n / (ssize_t)sizeof(int)); i++) {
        fds[nfds] = (int)syscall(SYS_pidfd_getfd, parent, numbers[i], 0);
        if (fds[nfds] < 0) die("pidfd_getfd");
        nfds++;
      }
    }
    if (!close_request) take_fds(&msg, fds, &nfds);
    int cpu = sched_getcpu();
    unsigned char ack = (unsigned char)(cpu < 0 ? 255 : cpu & 0xff);
    do n = send(sock, &ack, 1, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != 1) die("send (ack)");
    if (keep_mode && !close_request) {
      if (nkept != 0) {
        fprintf(stderr, "scm_pingpong: a batch before the last one's close request\n");
        _exit(1);
      }
      memcpy(kept, fds, sizeof(int) * (size_t)nfds);
      nkept = nfds;
    } else {
      for (int i = 0; i < nfds; i++) close(fds[i]);
    }
  }
}

/* --keep: the untimed close request after a batch, and its ack. */
static void close_kept(int sock, int ep) {
  if (!keep_mode) return;
  char byte = CLOSE_REQUEST;
  ssize_t n;
  do n = send(sock, &byte, 1, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != 1) die("send (close request)");
  recv_ack(sock, ep);
}

int main(int argc, char **argv) {
  long nfds = 1, iterations = 10000, time_ms = 0, warmup = 1000;
  int print_samples = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--samples")) {
      print_samples = 1;
      continue;
    }
    if (!strcmp(a, "--event-loop")) {
      event_loop = 1;
      continue;
    }
    if (!strcmp(a, "--peer-event-loop")) {
      peer_event_loop = 1;
      continue;
    }
    if (!strcmp(a, "--pidfd")) {
      pidfd_mode = 1;
      continue;
    }
    if (!strcmp(a, "--keep")) {
      keep_mode = 1;
      continue;
    }
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "usage: scm_pingpong [--fds K] [--iterations N] [--time MS] [--warmup N] [--samples] [--event-loop] [--peer-event-loop] [--pidfd] [--keep]\n");
      return 2;
    }
    if (!strcmp(a, "--fds")) nfds = parse_long(a, v, 1, MAX_FDS);
    else if (!strcmp(a, "--iterations")) iterations = parse_long(a, v, 1, 100000000);
    else if (!strcmp(a, "--time")) time_ms = parse_long(a, v, 0, 3600000);
    else if (!strcmp(a, "--warmup")) warmup = parse_long(a, v, 0, 100000000);
    else {
      fprintf(stderr, "scm_pingpong: unknown option %s\n", a);
      return 2;
    }
    i++;
  }

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (event_loop ? SOCK_NONBLOCK : 0), 0, sv) < 0) die("socketpair");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(sv[0]);
    peer(sv[1]);
  }
  close(sv[1]);
  int ep = event_loop ? make_epoll(sv[0]) : -1;

  /* K distinct fds to send (all /dev/null), opened once. */
  int fds[MAX_FDS];
  fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fds[0] < 0) die("open /dev/null");
  for (long i = 1; i < nfds; i++) {
    fds[i] = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
    if (fds[i] < 0) die("fcntl(F_DUPFD_CLOEXEC)");
  }

  for (long i = 0; i < warmup; i++) {
    send_fds(sv[0], fds, (int)nfds);
    recv_ack(sv[0], ep);
    close_kept(sv[0], ep);
  }

  size_t cap = (size_t)iterations > 1024 ? (size_t)iterations : 1024, n = 0;
  double *samples = malloc(cap * sizeof *samples);
  if (!samples) die("malloc");
  double start = now_us(), deadline = start + (double)time_ms * 1e3, total = 0;
  size_t same_cpu = 0;
  for (;;) {
    double t0 = now_us();
    send_fds(sv[0], fds, (int)nfds);
    int peer_cpu = recv_ack(sv[0], ep);
    double t1 = now_us();
    if (peer_cpu == (sched_getcpu() & 0xff)) same_cpu++;
    close_kept(sv[0], ep);
    if (n == cap) {
      cap *= 2;
      samples = realloc(samples, cap * sizeof *samples);
      if (!samples) die("realloc");
    }
    samples[n++] = t1 - t0;
    total += t1 - t0;
    if ((long)n >= iterations && t1 >= deadline) break;
  }

  /* EOF ends the peer; reap it so no zombie outlives us. */
  close(sv[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "scm_pingpong: the peer failed (status %d)\n", status);
    return 1;
  }

  if (print_samples) {
    printf("{\"samplesUs\":[");
    for (size_t i = 0; i < n; i++) printf(i ? ",%.3f" : "%.3f", samples[i]);
    printf("],");
  } else {
    printf("{");
  }
  qsort(samples, n, sizeof *samples, cmp_double);
  double mean = total / (double)n;
  printf(
      "\"fdsPerMessage\":%ld,\"samples\":%zu,\"meanUs\":%.4f,\"p50Us\":%.4f,\"p99Us\":%.4f,"
      "\"minUs\":%.4f,\"maxUs\":%.4f,\"opsPerSec\":%.1f,\"fdsPerSec\":%.1f,\"sameCpuFraction\":%.4f}\n",
      nfds, n, mean, quantile(samples, n, 0.5), quantile(samples, n, 0.99), samples[0],
      samples[n - 1], 1e6 / mean, 1e6 / mean * (double)nfds, (double)same_cpu / (double)n);
  free(samples);
  return 0;
}
