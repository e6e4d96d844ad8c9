// The native tests' view of their own open-fd table, to check it is the
// same after a test as before it.
#ifndef FDBRIDGE_TEST_OPEN_FDS_H_
#define FDBRIDGE_TEST_OPEN_FDS_H_

#include <dirent.h>
#include <stdlib.h>

#include <set>

// The fds open in this process (the listing's own fd left out).
inline std::set<int> OpenFds() {
  std::set<int> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  int self = dirfd(dir);
  while (struct dirent* ent = readdir(dir)) {
    if (ent->d_name[0] == '.') continue;
    int fd = atoi(ent->d_name);
    if (fd != self) out.insert(fd);
  }
  closedir(dir);
  return out;
}

#endif  // FDBRIDGE_TEST_OPEN_FDS_H_
