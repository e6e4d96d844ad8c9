/* Numbers of the system calls fdbridge makes through syscall(2) that an
 * older C library's <sys/syscall.h> may not name yet (glibc names a call
 * only in releases made after the kernel's). From 424 on every
 * architecture but alpha shares one syscall table (the kernel's
 * scripts/syscall.tbl), so one number serves x86-64 and arm64 alike.
 *
 * Plain C: the addon (C++) and the bench's C tools (native/bench) include it. */
#ifndef FDBRIDGE_SYSCALL_NUMBERS_H_
#define FDBRIDGE_SYSCALL_NUMBERS_H_

#include <sys/syscall.h>

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#endif /* FDBRIDGE_SYSCALL_NUMBERS_H_ */
