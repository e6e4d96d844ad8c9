// Checks that ScmRecv (native/scm_rights.cc) sizes the set of fds it
// receives once, from the cmsg lengths: receiving 253 fds in one message
// makes no more allocations than receiving one. Built and run by
// test/native/scm-recv-alloc.test.ts; prints "ok <allocations>" and exits 0,
// or says what differed and exits 1. Its open-fd table is checked to be
// the same afterwards.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <new>
#include <set>
#include <vector>

#include "open_fds.h"
#include "scm_rights.h"

namespace {
// Allocations made while `counting` is set (operator new below).
bool counting = false;
size_t allocations = 0;
}  // namespace

void* operator new(size_t n) {
  if (counting) allocations++;
  void* p = malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { free(p); }
void operator delete(void* p, size_t) noexcept { free(p); }

namespace {

// Allocations of one ScmRecv of a message carrying `n` fds (copies of one
// /dev/null fd); the received fds are closed.
size_t AllocationsToReceive(size_t n) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    perror("socketpair");
    exit(1);
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<int> sent(n, devnull);
  char byte = 'x';
  if (fdbridge::ScmSend(sv[0], &byte, 1, sent.data(), n) != 1) {
    fprintf(stderr, "ScmSend of %zu fds failed\n", n);
    exit(1);
  }
  std::vector<char> control(fdbridge::ScmControlSpace(fdbridge::kMaxFdsPerMessage));
  std::vector<int> fds(fdbridge::kMaxFdsPerMessage, -1);
  char buf[16];
  fdbridge::RecvResult result;
  counting = true;
  allocations = 0;
  fdbridge::ScmRecv(sv[1], SOCK_SEQPACKET, buf, sizeof(buf), control.data(), control.size(), fds.data(),
                    fds.size(), &result);
  counting = false;
  size_t made = allocations;
  if (result.status != fdbridge::RecvStatus::kMessage || result.nfds != n) {
    fprintf(stderr, "ScmRecv of %zu fds: status %d, %zu fds\n", n, static_cast<int>(result.status), result.nfds);
    exit(1);
  }
  for (size_t i = 0; i < result.nfds; i++) close(fds[i]);
  close(devnull);
  close(sv[0]);
  close(sv[1]);
  return made;
}

}  // namespace

int main() {
  std::set<int> before = OpenFds();
  size_t one = AllocationsToReceive(1);
  size_t most = AllocationsToReceive(fdbridge::kMaxFdsPerMessage);
  // No more: the first receive also makes what fdbridge makes once per
  // process (the registry of its fds and their install generations).
  if (most > one) {
    fprintf(stderr, "receiving %zu fds made %zu allocations, receiving 1 made %zu\n", fdbridge::kMaxFdsPerMessage, most,
            one);
    return 1;
  }
  if (OpenFds() != before) {
    fprintf(stderr, "the open-fd table is not what it was\n");
    return 1;
  }
  printf("ok %zu\n", most);
  return 0;
}
