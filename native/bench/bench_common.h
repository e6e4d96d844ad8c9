/* What the bench's C tools (scm_pingpong.c, frame_bench.c) share: failing
 * with errno, the clock, SCM_RIGHTS control messages, quantiles, integer
 * flags. Each tool is built from its one .c file (harness/anchor-build.ts),
 * so everything here is static. Define BENCH_NAME (the tool's name, which
 * starts its messages) before including it. Plain C. */
#ifndef FDBRIDGE_BENCH_COMMON_H_
#define FDBRIDGE_BENCH_COMMON_H_

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_common.h"
#endif

/* SCM_MAX_FD (include/net/scm.h): the most fds one sendmsg may carry. */
#define MAX_FDS 253

static void die(const char *what) {
  fprintf(stderr, BENCH_NAME ": %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* The control buffer, aligned for struct cmsghdr as CMSG_* requires. */
union control {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
};

/* Makes `msg` carry `nfds` fds (1 to MAX_FDS) in one SCM_RIGHTS message held in `ctl`. */
static void put_fds(struct msghdr *msg, union control *ctl, const int *fds, int nfds) {
  msg->msg_control = ctl->buf;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
  struct cmsghdr *c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
}

/* recvmsg(2) of one message into `iov`, its fds (close-on-exec) in `ctl`,
 * retried on EINTR; `msg` is left for take_fds and its flags. */
static ssize_t recv_fds(int sock, struct msghdr *msg, struct iovec *iov, union control *ctl, int flags) {
  memset(msg, 0, sizeof *msg);
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
  msg->msg_control = ctl->buf;
  msg->msg_controllen = sizeof ctl->buf;
  ssize_t n;
  do n = recvmsg(sock, msg, MSG_CMSG_CLOEXEC | flags);
  while (n < 0 && errno == EINTR);
  return n;
}

/* Appends the fds a received `msg` carries to fds[*nfds...], MAX_FDS in all at most. */
static void take_fds(struct msghdr *msg, int *fds, int *nfds) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      if (*nfds + k > MAX_FDS) k = MAX_FDS - *nfds;
      memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * (size_t)k);
      *nfds += k;
    }
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Linear interpolation between order statistics (tinybench's quantile); 0 with no samples. */
static double quantile(const double *sorted, size_t n, double q) {
  if (n == 0) return 0;
  double pos = q * (double)(n - 1);
  size_t lo = (size_t)pos;
  size_t hi = lo + 1 < n ? lo + 1 : lo;
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - (double)lo);
}

/* The integer value `s` of `flag`, in [min, max]; anything else exits with status 2. */
static long parse_long(const char *flag, const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < min || v > max) {
    fprintf(stderr, BENCH_NAME ": %s takes an integer in [%ld, %ld], not %s\n", flag, min, max, s);
    exit(2);
  }
  return v;
}

#endif /* FDBRIDGE_BENCH_COMMON_H_ */
