// Checks native/unique_fd.h on its own (no Node): built with assertions on by
// test/native/unique-fd.test.ts. With no argument it runs every ownership
// check and prints "ok <n> checks"; with an argument it breaks one invariant
// on purpose ("double-close", "self-reset") and must die on its assert.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <set>
#include <string>
#include <utility>

#include "open_fds.h"
#include "unique_fd.h"

using fdbridge::UniqueFd;
using fdbridge::UniqueFds;

namespace {

int checks = 0;
int failures = 0;

#define CHECK(cond)                                                   \
  do {                                                                \
    checks++;                                                         \
    if (!(cond)) {                                                    \
      failures++;                                                     \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    }                                                                 \
  } while (0)

bool IsOpen(int fd) { return fcntl(fd, F_GETFD) >= 0; }

int NewFd() {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    perror("open");
    exit(2);
  }
  return fd;
}

void CheckUniqueFd() {
  int raw = NewFd();
  {
    UniqueFd fd(raw);
    CHECK(fd);
    CHECK(fd.get() == raw);
  }
  CHECK(!IsOpen(raw));  // closed on scope exit

  UniqueFd empty;
  CHECK(!empty);
  CHECK(empty.get() == -1);
  UniqueFd from_error(-EMFILE);  // a failed call's result makes an empty owner
  CHECK(!from_error);
  CHECK(from_error.get() == -1);

  raw = NewFd();
  int kept;
  {
    UniqueFd fd(raw);
    kept = fd.release();
    CHECK(!fd);
  }
  CHECK(kept == raw);
  CHECK(IsOpen(raw));  // released: not closed by the owner
  close(raw);

  int a = NewFd();
  int b = NewFd();
  {
    UniqueFd fa(a);
    UniqueFd moved(std::move(fa));
    CHECK(!fa);
    CHECK(moved.get() == a);
    UniqueFd fb(b);
    moved = std::move(fb);  // assigning over an owner closes what it held
    CHECK(!IsOpen(a));
    CHECK(moved.get() == b);
    CHECK(IsOpen(b));
    UniqueFd& alias = moved;
    moved = std::move(alias);  // self-move keeps the fd
    CHECK(moved.get() == b);
    CHECK(IsOpen(b));
  }
  CHECK(!IsOpen(b));

  a = NewFd();
  b = NewFd();
  {
    UniqueFd fd(a);
    fd.reset(b);
    CHECK(!IsOpen(a));
    CHECK(fd.get() == b);
    fd.reset();
    CHECK(!IsOpen(b));
    CHECK(!fd);
    fd.reset(-1);
    CHECK(!fd);
  }

  // errno survives the close, so `return -errno;` beside an owner is safe.
  raw = NewFd();
  {
    UniqueFd fd(raw);
    errno = ENOTSOCK;
  }
  CHECK(errno == ENOTSOCK);
  CHECK(!IsOpen(raw));
}

void CheckUniqueFds() {
  int fds[3] = {NewFd(), NewFd(), NewFd()};
  {
    UniqueFds set(fds, 3);
    CHECK(set.size() == 3);
    CHECK(set[1] == fds[1]);
    CHECK(set.data()[2] == fds[2]);
  }
  for (int fd : fds) CHECK(!IsOpen(fd));

  UniqueFds set;
  CHECK(set.empty());
  int a = NewFd();
  int b = NewFd();
  set.push_back(UniqueFd(a));
  set.push_back(UniqueFd(b));
  CHECK(set.size() == 2);
  UniqueFds moved(std::move(set));
  CHECK(set.empty());
  CHECK(moved.size() == 2);
  int out[2] = {-1, -1};
  moved.release_into(out);
  CHECK(moved.empty());
  CHECK(out[0] == a && out[1] == b);
  CHECK(IsOpen(a) && IsOpen(b));

  UniqueFds again(std::vector<int>{a, b});
  std::vector<int> released = again.release();
  CHECK(again.empty());
  CHECK(released.size() == 2 && IsOpen(a) && IsOpen(b));

  UniqueFds owner(std::move(released));
  int c = NewFd();
  UniqueFds other;
  other.push_back(UniqueFd(c));
  owner = std::move(other);  // assigning over a set closes what it held
  CHECK(!IsOpen(a) && !IsOpen(b));
  CHECK(owner.size() == 1 && owner[0] == c && IsOpen(c));
  owner.reset();
  CHECK(owner.empty());
  CHECK(!IsOpen(c));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    std::string what = argv[1];
    if (what == "double-close") {
      UniqueFd fd(NewFd());
      close(fd.get());  // someone else closes a number it does not own
      return 0;         // the owner's close at scope exit must assert
    }
    if (what == "self-reset") {
      UniqueFd fd(NewFd());
      fd.reset(fd.get());  // would close the fd it is taking
      return 0;
    }
    fprintf(stderr, "unknown mode %s\n", what.c_str());
    return 2;
  }
  std::set<int> before = OpenFds();
  CheckUniqueFd();
  CheckUniqueFds();
  CHECK(OpenFds() == before);
  if (failures != 0) {
    fprintf(stderr, "%d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("ok %d checks\n", checks);
  return 0;
}
