/**
 * Linux's errno names and messages for the errnos libuv has no name for
 * (util.getSystemErrorName gives "Unknown system error -109" for them),
 * e.g. ETOOMANYREFS, which sendmsg(2) returns when a user's fds in flight
 * over Unix sockets pass its RLIMIT_NOFILE. The numbers are those of the
 * generic table (asm-generic/errno*.h: x86, arm, arm64, powerpc, s390,
 * riscv, loongarch); alpha, mips, parisc and sparc number them otherwise,
 * and get no name from here (LINUX_GENERIC_ERRNO_ARCHS). The names and
 * messages are glibc's strerror(3) (EDEADLK's alias EDEADLOCK left out).
 */
export const LINUX_ERRNOS: ReadonlyMap<number, readonly [name: string, message: string]> = new Map([
  [8, ['ENOEXEC', 'Exec format error']],
  [10, ['ECHILD', 'No child processes']],
  [15, ['ENOTBLK', 'Block device required']],
  [33, ['EDOM', 'Numerical argument out of domain']],
  [35, ['EDEADLK', 'Resource deadlock avoided']],
  [37, ['ENOLCK', 'No locks available']],
  [42, ['ENOMSG', 'No message of desired type']],
  [43, ['EIDRM', 'Identifier removed']],
  [44, ['ECHRNG', 'Channel number out of range']],
  [45, ['EL2NSYNC', 'Level 2 not synchronized']],
  [46, ['EL3HLT', 'Level 3 halted']],
  [47, ['EL3RST', 'Level 3 reset']],
  [48, ['ELNRNG', 'Link number out of range']],
  [50, ['ENOCSI', 'No CSI structure available']],
  [51, ['EL2HLT', 'Level 2 halted']],
  [52, ['EBADE', 'Invalid exchange']],
  [53, ['EBADR', 'Invalid request descriptor']],
  [54, ['EXFULL', 'Exchange full']],
  [55, ['ENOANO', 'No anode']],
  [56, ['EBADRQC', 'Invalid request code']],
  [57, ['EBADSLT', 'Invalid slot']],
  [59, ['EBFONT', 'Bad font file format']],
  [60, ['ENOSTR', 'Device not a stream']],
  [62, ['ETIME', 'Timer expired']],
  [63, ['ENOSR', 'Out of streams resources']],
  [65, ['ENOPKG', 'Package not installed']],
  [66, ['EREMOTE', 'Object is remote']],
  [67, ['ENOLINK', 'Link has been severed']],
  [68, ['EADV', 'Advertise error']],
  [69, ['ESRMNT', 'Srmount error']],
  [70, ['ECOMM', 'Communication error on send']],
  [72, ['EMULTIHOP', 'Multihop attempted']],
  [73, ['EDOTDOT', 'RFS specific error']],
  [74, ['EBADMSG', 'Bad message']],
  [76, ['ENOTUNIQ', 'Name not unique on network']],
  [77, ['EBADFD', 'File descriptor in bad state']],
  [78, ['EREMCHG', 'Remote address changed']],
  [79, ['ELIBACC', 'Can not access a needed shared library']],
  [80, ['ELIBBAD', 'Accessing a corrupted shared library']],
  [81, ['ELIBSCN', '.lib section in a.out corrupted']],
  [82, ['ELIBMAX', 'Attempting to link in too many shared libraries']],
  [83, ['ELIBEXEC', 'Cannot exec a shared library directly']],
  [85, ['ERESTART', 'Interrupted system call should be restarted']],
  [86, ['ESTRPIPE', 'Streams pipe error']],
  [87, ['EUSERS', 'Too many users']],
  [96, ['EPFNOSUPPORT', 'Protocol family not supported']],
  [102, ['ENETRESET', 'Network dropped connection on reset']],
  [109, ['ETOOMANYREFS', 'Too many references: cannot splice']],
  [115, ['EINPROGRESS', 'Operation now in progress']],
  [116, ['ESTALE', 'Stale file handle']],
  [117, ['EUCLEAN', 'Structure needs cleaning']],
  [118, ['ENOTNAM', 'Not a XENIX named type file']],
  [119, ['ENAVAIL', 'No XENIX semaphores available']],
  [120, ['EISNAM', 'Is a named type file']],
  [122, ['EDQUOT', 'Disk quota exceeded']],
  [123, ['ENOMEDIUM', 'No medium found']],
  [124, ['EMEDIUMTYPE', 'Wrong medium type']],
  [126, ['ENOKEY', 'Required key not available']],
  [127, ['EKEYEXPIRED', 'Key has expired']],
  [128, ['EKEYREVOKED', 'Key has been revoked']],
  [129, ['EKEYREJECTED', 'Key was rejected by service']],
  [130, ['EOWNERDEAD', 'Owner died']],
  [131, ['ENOTRECOVERABLE', 'State not recoverable']],
  [132, ['ERFKILL', 'Operation not possible due to RF-kill']],
]);

/** The architectures (process.arch) whose Linux errno numbers are the generic table's. */
export const LINUX_GENERIC_ERRNO_ARCHS: ReadonlySet<string> = new Set(['x64', 'ia32', 'arm', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64']);

/** Linux's name and message for the (positive) errno `errno` that libuv has no name for, where the table applies. */
export function linuxErrno(errno: number, platform: string = process.platform, arch: string = process.arch): readonly [name: string, message: string] | undefined {
  if (platform !== 'linux' || !LINUX_GENERIC_ERRNO_ARCHS.has(arch)) return undefined;
  return LINUX_ERRNOS.get(errno);
}
