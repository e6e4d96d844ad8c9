/*
 * fdtrack: an LD_PRELOAD interposer that records, for every fd a process
 * creates, the native stack that created it (fdbridge run --track-fds).
 *
 * It wraps the libc calls that make fds (open*, creat, socket, socketpair,
 * accept*, pipe*, dup*, fcntl and fcntl64 F_DUPFD*, eventfd, memfd_create, epoll_create*,
 * inotify_init*, timerfd_create, signalfd, pidfd_open, pidfd_getfd and
 * io_uring_setup through syscall(2), and the fds recvmsg receives with
 * SCM_RIGHTS) and writes one record per fd into a
 * file that another process can read at any time, even after this one died:
 * $FDBRIDGE_FDTRACK_DIR/native-<pid>.bin, mapped MAP_SHARED and indexed by
 * fd number, so a record is always that of the latest creation of the fd.
 * No fd of its own stays open (the file is closed once mapped).
 *
 * A record holds the fd's /proc/self/fd target at creation (the reader
 * compares it with the leaked fd's target, so a record left by an fd closed
 * and reused by code that did not go through libc is never blamed) and up
 * to FRAMES return addresses as (module, offset) pairs via dladdr, so the
 * reader can symbolize them with addr2line after this process is gone.
 *
 * Invariants: a thread-local guard makes the wrappers pass straight through
 * while a record is being made (backtrace() and dladdr() may open files);
 * a forked child maps a file of its own (pthread_atfork) before it records,
 * and no lock of the recorder's is held across a fork; a thread with an fd
 * table of its own records nothing (own_table); an image that calls exec
 * flags its file (FLAG_EXEC) until the next image maps it anew, so an image
 * that cannot (another user's, one without this library) is not read as
 * the one that made the records.
 * Raw system calls (liburing's, a direct SYS_openat) are not seen. An
 * io_uring ring set up through syscall(2) is recorded like any fd, under one
 * of two kinds: libuv's ring for epoll_ctl alone (libuv_epoll_ring: its
 * shape, and set up from the object that holds libuv), or any other ring,
 * which can make and close fds unseen and is also noted in the header's
 * flags.
 * The reader takes an open ring as libuv's only on a record of the first
 * kind at its number; such a record is cleared when its number is closed
 * through close() or syscall(2)'s close or close_range (libuv closes its fds
 * with syscall(SYS_close)), so it never vouches for a ring put at the
 * number since by a call this library does not see.
 */
#define _GNU_SOURCE
#include <alloca.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <linux/kcmp.h>
#include <link.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FDS 65536
#define FRAMES 24
#define MODULES 128
#define TARGET 200
#define MODULE_PATH 240

/* The file's layout; src/fd-track.ts reads it (keep the two in step). */
struct fdtrack_frame {
  uint32_t module; /* index into modules + 1; 0 = unknown (JIT code) */
  uint32_t pad;
  uint64_t offset; /* address - module base */
};

struct fdtrack_record {
  uint64_t seq; /* 0: never written; written last */
  uint32_t nframes;
  uint32_t kind; /* which call made it: see KINDS */
  char target[TARGET];
  struct fdtrack_frame frames[FRAMES];
};

struct fdtrack_header {
  char magic[8]; /* "fdtrack1" */
  uint32_t max_fds;
  uint32_t frames;
  uint32_t nmodules;
  uint32_t flags; /* FLAG_*: what this process did that the records cannot show */
  char modules[MODULES][MODULE_PATH];
  uint64_t module_base[MODULES];
};

/*
 * An io_uring ring that can make and close fds was set up (through
 * syscall(2), as libuv does): its opens, accepts and closes bypass the C
 * library, so from then on a record may not be the latest fd made at its
 * number. libuv's ring for epoll_ctl alone (every loop's, Node 22 and
 * later) does not set it: see libuv_epoll_ring.
 */
#define FLAG_IO_URING 1u
/*
 * This process called exec: the records are the image's that called it.
 * The next image clears it as it maps the file anew (O_TRUNC), unless it
 * cannot (it runs as a user that may not enter the directory, or without
 * this library): then nothing records it, and its fds are not these
 * records' (one it opens at a number the old image opened the same file at
 * would read as the old image's). Cleared again if exec fails.
 */
#define FLAG_EXEC 2u

static const char *const KINDS[] = {"open", "socket", "socketpair", "accept", "pipe", "dup", "fcntl", "eventfd",
                                    "memfd_create", "epoll_create", "inotify_init", "timerfd_create", "signalfd",
                                    "recvmsg", "pidfd_open", "pidfd_getfd", "io_uring_setup",
                                    "io_uring_setup (libuv's epoll_ctl ring)"};
enum { K_OPEN, K_SOCKET, K_SOCKETPAIR, K_ACCEPT, K_PIPE, K_DUP, K_FCNTL, K_EVENTFD, K_MEMFD, K_EPOLL, K_INOTIFY,
       K_TIMERFD, K_SIGNALFD, K_RECVMSG, K_PIDFD_OPEN, K_PIDFD_GETFD, K_IO_URING, K_IO_URING_LIBUV };

static struct fdtrack_header *header;
static struct fdtrack_record *records;
static atomic_uint_fast64_t next_seq = 1;
static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int busy;
/*
 * This thread's fd table is its own, no longer the process's (close_range
 * with CLOSE_RANGE_UNSHARE, unshare(CLONE_FILES): fdbridge's fd-hold
 * threads): the numbers it opens and closes are not the process's, and its
 * readlink of /proc/self/fd/N reads the process's table, not its own. It
 * records nothing and clears nothing.
 */
static __thread int own_table;
/* The highest number a libuv ring was recorded at (before_close_range), -1 for none. */
static atomic_long highest_libuv_ring = -1;

#define REAL(name) static __typeof__(name) *real_##name
REAL(open);
REAL(open64);
REAL(openat);
REAL(openat64);
REAL(creat);
REAL(socket);
REAL(socketpair);
REAL(accept);
REAL(accept4);
REAL(pipe);
REAL(pipe2);
REAL(dup);
REAL(dup2);
REAL(dup3);
REAL(fcntl);
REAL(eventfd);
REAL(memfd_create);
REAL(epoll_create);
REAL(epoll_create1);
REAL(inotify_init);
REAL(inotify_init1);
REAL(timerfd_create);
REAL(signalfd);
REAL(recvmsg);
REAL(close);

#define RESOLVE(name) \
  ({ \
    if (!real_##name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name); \
    real_##name; \
  })

/* Maps $FDBRIDGE_FDTRACK_DIR/native-<pid>.bin; silently off when unset or on any failure. */
/* The process that mapped `header`: a vfork child shares it, and its exec is not this process's. */
static pid_t mapped_pid;

static void map_file(void) {
  header = NULL;
  records = NULL;
  const char *dir = getenv("FDBRIDGE_FDTRACK_DIR");
  if (!dir || !*dir) return;
  char path[4096];
  snprintf(path, sizeof path, "%s/native-%d.bin", dir, (int)getpid());
  busy = 1;
  int fd = RESOLVE(open)(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    busy = 0;
    return;
  }
  size_t size = sizeof(struct fdtrack_header) + (size_t)MAX_FDS * sizeof(struct fdtrack_record);
  void *p = MAP_FAILED;
  if (ftruncate(fd, (off_t)size) == 0) p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  RESOLVE(close)(fd);
  if (p != MAP_FAILED) {
    header = p;
    mapped_pid = getpid();
    memcpy(header->magic, "fdtrack1", 8);
    header->max_fds = MAX_FDS;
    header->frames = FRAMES;
    records = (struct fdtrack_record *)(header + 1);
  }
  busy = 0;
}

/*
 * A fork while another thread holds module_lock (a record being made)
 * would leave the child's copy of the lock held by a thread the child does
 * not have: its first record would wait for it forever. So the lock is
 * taken around the fork and let go on both sides of it.
 */
static void before_fork(void) { pthread_mutex_lock(&module_lock); }

static void after_fork_parent(void) { pthread_mutex_unlock(&module_lock); }

static void after_fork_child(void) {
  pthread_mutex_unlock(&module_lock);
  own_table = 0; /* the child's one thread: its table is the child's */
  if (header) {
    munmap(header, sizeof(struct fdtrack_header) + (size_t)MAX_FDS * sizeof(struct fdtrack_record));
    map_file();
  }
}

__attribute__((constructor)) static void fdtrack_init(void) {
  map_file();
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/*
 * The loaded objects' address ranges, from dl_iterate_phdr: dladdr() would
 * scan the Node binary's ~100,000 dynamic symbols for every frame
 * (milliseconds a call). Refreshed when an address falls in none of them
 * (an object loaded since, or JIT code).
 */
struct range {
  uintptr_t lo, hi, base;
  uint32_t index; /* into header->modules, + 1; 0 = not yet added */
  char path[MODULE_PATH];
};
static struct range ranges[MODULES];
static int nranges;

static int add_range(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  (void)data;
  if (nranges == MODULES) return 1;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uintptr_t a = info->dlpi_addr + ph->p_vaddr;
    if (a < lo) lo = a;
    if (a + ph->p_memsz > hi) hi = a + ph->p_memsz;
  }
  if (hi == 0) return 0;
  struct range *r = &ranges[nranges++];
  r->lo = lo;
  r->hi = hi;
  r->base = info->dlpi_addr;
  r->index = 0;
  /* The main program has an empty name. */
  strncpy(r->path, info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "/proc/self/exe", MODULE_PATH - 1);
  r->path[MODULE_PATH - 1] = '\0';
  return 0;
}

static struct range *find_range(uintptr_t a) {
  for (int i = 0; i < nranges; i++) {
    if (a >= ranges[i].lo && a < ranges[i].hi) return &ranges[i];
  }
  return NULL;
}

/* The index (+1) in the header's module table of the object that holds `addr`, and the offset in it; 0 if none. */
static uint32_t module_of(void *addr, uint64_t *offset) {
  uintptr_t a = (uintptr_t)addr;
  pthread_mutex_lock(&module_lock);
  struct range *r = find_range(a);
  if (!r) {
    /* Keep the header indexes of the objects seen so far: rebuild, then carry them over. */
    struct range old[MODULES];
    int nold = nranges;
    memcpy(old, ranges, sizeof(struct range) * (size_t)nranges);
    nranges = 0;
    dl_iterate_phdr(add_range, NULL);
    for (int i = 0; i < nranges; i++) {
      for (int j = 0; j < nold; j++) {
        if (old[j].base == ranges[i].base && strcmp(old[j].path, ranges[i].path) == 0) ranges[i].index = old[j].index;
      }
    }
    r = find_range(a);
  }
  uint32_t index = 0;
  if (r) {
    if (!r->index && header->nmodules < MODULES) {
      uint32_t n = header->nmodules;
      memcpy(header->modules[n], r->path, MODULE_PATH);
      header->module_base[n] = r->base;
      atomic_thread_fence(memory_order_release);
      header->nmodules = n + 1;
      r->index = n + 1;
    }
    index = r->index;
    *offset = (uint64_t)(a - r->base);
  }
  pthread_mutex_unlock(&module_lock);
  return index;
}

/* This thread's stack bounds, found once per thread. */
static __thread uintptr_t stack_lo, stack_hi;

static void find_stack(void) {
  pthread_attr_t attr;
  void *addr;
  size_t size;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
  if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
    stack_lo = (uintptr_t)addr;
    stack_hi = (uintptr_t)addr + size;
  }
  pthread_attr_destroy(&attr);
}

/*
 * The return addresses of the callers, by frame pointers: nanoseconds a
 * frame where backtrace()'s unwinder took milliseconds a call (it searches
 * the .eh_frame of a large binary for each frame). It stops at the first
 * frame without a frame pointer (a caller built with -fomit-frame-pointer,
 * libc), which ends the interesting part anyway: the addon (node-gyp keeps
 * frame pointers) and this library are walked. Every pointer it follows is
 * checked to lie in this thread's stack, above the last one.
 */
__attribute__((noinline)) static int fp_backtrace(void **out, int max) {
  if (!stack_hi) find_stack();
  void **fp = (void **)__builtin_frame_address(0);
  int n = 0;
  while (n < max && (uintptr_t)fp >= stack_lo && (uintptr_t)fp + 2 * sizeof(void *) <= stack_hi && ((uintptr_t)fp & 7) == 0) {
    void *ret = fp[1];
    if (!ret) break;
    out[n++] = ret;
    void **next = (void **)fp[0];
    if (next <= fp) break;
    fp = next;
  }
  return n;
}

static void record(int fd, int kind) {
  if (fd < 0 || fd >= MAX_FDS || !records || busy || own_table) return;
  busy = 1;
  struct fdtrack_record *r = &records[fd];
  r->seq = 0;
  atomic_thread_fence(memory_order_release);
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, r->target, TARGET - 1);
  r->target[n < 0 ? 0 : n] = '\0';
  void *frames[FRAMES];
  int count = fp_backtrace(frames, FRAMES);
  uint32_t out = 0;
  /* The reader leaves out this library's own frames (record, the wrapper). */
  for (int i = 0; i < count && out < FRAMES; i++) {
    uint64_t offset = 0;
    uint32_t m = module_of(frames[i], &offset);
    r->frames[out].module = m;
    r->frames[out].offset = m ? offset : (uint64_t)(uintptr_t)frames[i];
    out++;
  }
  r->nframes = out;
  r->kind = (uint32_t)kind;
  atomic_thread_fence(memory_order_release);
  r->seq = atomic_fetch_add(&next_seq, 1);
  busy = 0;
}

static int rec(int fd, int kind) {
  if (fd >= 0) record(fd, kind);
  return fd;
}

static int has_mode(int flags) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

/* open's third argument exists only with O_CREAT or O_TMPFILE. */
#define MODE_ARG(flags)             \
  mode_t mode = 0;                  \
  if (has_mode(flags)) {            \
    va_list ap;                     \
    va_start(ap, flags);            \
    mode = va_arg(ap, mode_t);      \
    va_end(ap);                     \
  }

int open(const char *path, int flags, ...) {
  MODE_ARG(flags);
  return rec(RESOLVE(open)(path, flags, mode), K_OPEN);
}

int open64(const char *path, int flags, ...) {
  MODE_ARG(flags);
  return rec(RESOLVE(open64)(path, flags, mode), K_OPEN);
}

int openat(int dirfd, const char *path, int flags, ...) {
  MODE_ARG(flags);
  return rec(RESOLVE(openat)(dirfd, path, flags, mode), K_OPEN);
}

int openat64(int dirfd, const char *path, int flags, ...) {
  MODE_ARG(flags);
  return rec(RESOLVE(openat64)(dirfd, path, flags, mode), K_OPEN);
}

int creat(const char *path, mode_t mode) { return rec(RESOLVE(creat)(path, mode), K_OPEN); }
int socket(int domain, int type, int protocol) { return rec(RESOLVE(socket)(domain, type, protocol), K_SOCKET); }

int socketpair(int domain, int type, int protocol, int sv[2]) {
  int r = RESOLVE(socketpair)(domain, type, protocol, sv);
  if (r == 0) {
    record(sv[0], K_SOCKETPAIR);
    record(sv[1], K_SOCKETPAIR);
  }
  return r;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) { return rec(RESOLVE(accept)(fd, addr, len), K_ACCEPT); }
int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  return rec(RESOLVE(accept4)(fd, addr, len, flags), K_ACCEPT);
}

int pipe(int fds[2]) {
  int r = RESOLVE(pipe)(fds);
  if (r == 0) {
    record(fds[0], K_PIPE);
    record(fds[1], K_PIPE);
  }
  return r;
}

int pipe2(int fds[2], int flags) {
  int r = RESOLVE(pipe2)(fds, flags);
  if (r == 0) {
    record(fds[0], K_PIPE);
    record(fds[1], K_PIPE);
  }
  return r;
}

int dup(int fd) { return rec(RESOLVE(dup)(fd), K_DUP); }
int dup2(int fd, int to) { return rec(RESOLVE(dup2)(fd, to), K_DUP); }
int dup3(int fd, int to, int flags) { return rec(RESOLVE(dup3)(fd, to, flags), K_DUP); }

/* fcntl's and fcntl64's call: the copies F_DUPFD* make are recorded. */
static int fcntl_recorded(int (*call)(int, int, ...), int fd, int cmd, long arg) {
  int r = call(fd, cmd, arg);
  return (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) ? rec(r, K_FCNTL) : r;
}

int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  /* Every fcntl argument fits a long (int or pointer). */
  long arg = va_arg(ap, long);
  va_end(ap);
  return fcntl_recorded(RESOLVE(fcntl), fd, cmd, arg);
}

/*
 * glibc 2.28 and later link fcntl as fcntl64 in code built with 64-bit file
 * offsets (Node, and addons node-gyp builds, fdbridge's own): without this
 * one their F_DUPFD copies went unrecorded.
 */
static int (*real_fcntl64)(int, int, ...);
int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  if (!real_fcntl64) real_fcntl64 = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl64");
  return fcntl_recorded(real_fcntl64, fd, cmd, arg);
}

int eventfd(unsigned int initval, int flags) { return rec(RESOLVE(eventfd)(initval, flags), K_EVENTFD); }
int memfd_create(const char *name, unsigned int flags) { return rec(RESOLVE(memfd_create)(name, flags), K_MEMFD); }
int epoll_create(int size) { return rec(RESOLVE(epoll_create)(size), K_EPOLL); }
int epoll_create1(int flags) { return rec(RESOLVE(epoll_create1)(flags), K_EPOLL); }
int inotify_init(void) { return rec(RESOLVE(inotify_init)(), K_INOTIFY); }
int inotify_init1(int flags) { return rec(RESOLVE(inotify_init1)(flags), K_INOTIFY); }
int timerfd_create(int clock, int flags) { return rec(RESOLVE(timerfd_create)(clock, flags), K_TIMERFD); }

int signalfd(int fd, const sigset_t *mask, int flags) {
  int r = RESOLVE(signalfd)(fd, mask, flags);
  return fd == -1 ? rec(r, K_SIGNALFD) : r;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  ssize_t r = RESOLVE(recvmsg)(fd, msg, flags);
  if (r >= 0 && msg && msg->msg_control && !busy) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; i++) {
        int got;
        memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got); /* CMSG_DATA need not be int-aligned */
        record(got, K_RECVMSG);
      }
    }
  }
  return r;
}

#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif

/*
 * Whether io_uring_setup(entries, params), called from `caller`, sets up
 * the ring libuv submits only epoll_ctl operations to. Its shape: 256
 * entries, no flags but IORING_SETUP_NO_SQARRAY (libuv 1.45 to 1.51,
 * linux.c uv__iou_init: Node 20 passes none, Node 22 and 24 that one); its
 * ring for file operations, used under UV_USE_IO_URING=1 on Node 20, has
 * IORING_SETUP_SQPOLL and 64 entries. The shape alone is anyone's
 * (liburing's io_uring_queue_init(256, &ring, 0), an addon's own call), so
 * the call must also come from the object that defines libuv's
 * uv_loop_init as the program sees it: the Node binary, which links libuv
 * in and exports it, or a shared libuv. Any other ring is taken as able to
 * make fds, and so is libuv's where uv_loop_init cannot be found.
 */
static int libuv_epoll_ring(unsigned entries, const struct io_uring_params *params, void *caller) {
  if (entries != 256 || !params || (params->flags & ~IORING_SETUP_NO_SQARRAY) != 0) return 0;
  static void *uv;
  if (!uv) uv = dlsym(RTLD_DEFAULT, "uv_loop_init");
  if (!uv) return 0;
  /* module_of holds module_lock: an fd made meanwhile (a signal handler's) passes through unrecorded, as while a record is made. */
  busy = 1;
  uint64_t offset;
  uint32_t module = module_of(caller, &offset);
  int same = module != 0 && module == module_of(uv, &offset);
  busy = 0;
  return same;
}

/*
 * Ends the record of a libuv ring at `fd`, before the close that frees the
 * number: a ring put there later (by a call this library does not see)
 * must not read as libuv's. A record of another kind is left: it never
 * vouches for a ring.
 */
static void forget_libuv_ring(long fd) {
  /* Above every number a libuv ring was recorded at (most closes): no record to read. */
  if (!records || own_table || fd < 0 || fd > atomic_load(&highest_libuv_ring) || fd >= MAX_FDS) return;
  struct fdtrack_record *r = &records[fd];
  if (r->kind != K_IO_URING_LIBUV) return;
  r->seq = 0;
  atomic_thread_fence(memory_order_release);
}

int close(int fd) {
  forget_libuv_ring(fd);
  return RESOLVE(close)(fd);
}

static __typeof__(syscall) *real_syscall;

/*
 * After a successful unshare of this thread's fd table: whether its table
 * is now another than the process's (the thread group leader's, which
 * /proc/self/fd shows). The call copies the table only where it was shared:
 * in the leader, or a process of one thread, it is still the process's.
 * kcmp(2) tells; where it cannot (a kernel without it, a seccomp filter),
 * a thread that is not the leader is taken to have one of its own.
 */
static int table_is_own(void) {
  if (!real_syscall) real_syscall = (__typeof__(syscall) *)dlsym(RTLD_NEXT, "syscall");
  long self = real_syscall(SYS_getpid);
  long tid = real_syscall(SYS_gettid);
  if (tid == self) return 0;
  long r = real_syscall(SYS_kcmp, self, tid, KCMP_FILES, 0L, 0L);
  return r != 0;
}

REAL(unshare);
int unshare(int flags) {
  int r = RESOLVE(unshare)(flags);
  if (r == 0 && (flags & CLONE_FILES)) own_table = table_is_own();
  return r;
}

#ifndef SYS_close_range
#define SYS_close_range 436 /* the same on x86-64 and aarch64 */
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/*
 * Before close_range(first, last, flags) closes numbers of the process's
 * table: the libuv ring records among them end (forget_libuv_ring). With
 * CLOSE_RANGE_UNSHARE it closes them in a table of the thread's own (see
 * own_table, set once that call made one); with CLOSE_RANGE_CLOEXEC alone,
 * none.
 */
static void before_close_range(unsigned first, unsigned last, unsigned flags) {
  if (own_table || (flags & (CLOSE_RANGE_CLOEXEC | CLOSE_RANGE_UNSHARE))) return;
  /* Up to the highest number a libuv ring was recorded at: no need to read the records of the whole range (close_range(3, ~0U) is how children shed fds). */
  long top = atomic_load(&highest_libuv_ring);
  for (long fd = first; fd <= (long)last && fd <= top; fd++) forget_libuv_ring(fd);
}

/*
 * pidfd_open and pidfd_getfd have no libc wrapper everywhere, and libuv sets
 * up its io_uring rings and closes its fds with syscall(2) too.
 */
long syscall(long number, ...) {
  if (!real_syscall) real_syscall = (__typeof__(syscall) *)dlsym(RTLD_NEXT, "syscall");
  va_list ap;
  va_start(ap, number);
  long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
  long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
  va_end(ap);
  /* libuv closes its fds this way on Linux (core.c uv__close_nocancel). An int argument: its register's upper half is not set. */
  if (number == SYS_close) forget_libuv_ring((int)a);
  if (number == SYS_close_range) before_close_range((unsigned)a, (unsigned)b, (unsigned)c);
  long r = real_syscall(number, a, b, c, d, e, f);
  if (number == SYS_close_range && r == 0 && ((unsigned)c & CLOSE_RANGE_UNSHARE)) own_table = table_is_own();
#ifdef SYS_pidfd_open
  if (number == SYS_pidfd_open && r >= 0) record((int)r, K_PIDFD_OPEN);
#endif
#ifdef SYS_pidfd_getfd
  if (number == SYS_pidfd_getfd && r >= 0) record((int)r, K_PIDFD_GETFD);
#endif
#ifdef SYS_io_uring_setup
  if (number == SYS_io_uring_setup && r >= 0 && header) {
    /* While a record is being made (busy) module_lock may be held: the ring is then not taken as libuv's. */
    int libuv = !busy && libuv_epoll_ring((unsigned)a, (const struct io_uring_params *)b, __builtin_return_address(0));
    if (!libuv) __atomic_fetch_or(&header->flags, FLAG_IO_URING, __ATOMIC_RELEASE);
    /* The bound first: a close of the number in another thread once the record is there finds it under the bound. */
    if (libuv) {
      long top = atomic_load(&highest_libuv_ring);
      while (r > top && !atomic_compare_exchange_weak(&highest_libuv_ring, &top, r)) {
      }
    }
    record((int)r, libuv ? K_IO_URING_LIBUV : K_IO_URING);
  }
#endif
  return r;
}

/* For the reader's messages (and a check that the library is the one it expects). */
const char *fdtrack_kind_name(unsigned kind) { return kind < sizeof KINDS / sizeof *KINDS ? KINDS[kind] : "?"; }

/*
 * The exec family: FLAG_EXEC is set before the call and cleared if it
 * returns (it failed). Each exported entry point is wrapped, since the C
 * library's own (execvp's, execl's) call execve internally, not through
 * this library; posix_spawn's child runs no atfork handler and maps no
 * file, and its image maps its own. A raw SYS_execve is not seen.
 */
static void exec_flag(int on) {
  if (!header || mapped_pid != getpid()) return;
  if (on)
    __atomic_fetch_or(&header->flags, FLAG_EXEC, __ATOMIC_SEQ_CST);
  else
    __atomic_fetch_and(&header->flags, ~FLAG_EXEC, __ATOMIC_SEQ_CST);
}

#define EXEC_WRAP(name, params, args)                                          \
  int name params {                                                            \
    static __typeof__(name) *real;                                             \
    if (!real) real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name);             \
    exec_flag(1);                                                              \
    int r = real args;                                                         \
    int saved = errno;                                                         \
    exec_flag(0);                                                              \
    errno = saved;                                                             \
    return r;                                                                  \
  }

EXEC_WRAP(execve, (const char *path, char *const argv[], char *const envp[]), (path, argv, envp))
EXEC_WRAP(execv, (const char *path, char *const argv[]), (path, argv))
EXEC_WRAP(execvp, (const char *file, char *const argv[]), (file, argv))
EXEC_WRAP(execvpe, (const char *file, char *const argv[], char *const envp[]), (file, argv, envp))
EXEC_WRAP(fexecve, (int fd, char *const argv[], char *const envp[]), (fd, argv, envp))

/* execl, execlp, execle: their arguments as execv's list (the C library builds the same one). */
#define LIST_ARGS(last, argv)                                                  \
  size_t n = 1;                                                                \
  va_list ap;                                                                  \
  va_start(ap, last);                                                          \
  while (va_arg(ap, char *)) n++;                                              \
  va_end(ap);                                                                  \
  char **argv = alloca((n + 1) * sizeof(char *));                             \
  argv[0] = (char *)last;                                                      \
  va_start(ap, last);                                                          \
  for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, char *);

int execl(const char *path, const char *arg, ...) {
  LIST_ARGS(arg, argv)
  va_end(ap);
  return execv(path, argv);
}

int execlp(const char *file, const char *arg, ...) {
  LIST_ARGS(arg, argv)
  va_end(ap);
  return execvp(file, argv);
}

int execle(const char *path, const char *arg, ...) {
  LIST_ARGS(arg, argv)
  char *const *envp = va_arg(ap, char *const *);
  va_end(ap);
  return execve(path, argv, envp);
}
