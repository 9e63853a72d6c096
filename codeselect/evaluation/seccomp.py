"""A seccomp filter for sandboxed jobs: a small BPF program of our own, loaded with prctl.

Written here rather than through libseccomp/pyseccomp so the sandbox needs no native library
beyond libc and no package outside the stdlib (the jail imports this file by path); the deny list
is short enough to read. x86-64 only (other architectures: `FilterUnavailable`).

Denied with EPERM: `socket` for every family but AF_INET/AF_INET6 (so no unix, netlink, packet,
vsock or crypto sockets), `socketpair`; `clone` with any
new-namespace flag, `unshare`, `setns`; `ptrace`, `process_vm_readv/writev`, `kcmp`; `mount`,
`umount2`, `pivot_root`, `chroot` and the new mount API; `prlimit64` on any process but the
caller; `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`, keyrings, module loading, kexec,
`open_by_handle_at`, `reboot`, `swapon/off`, `acct`, `quotactl`, `syslog`, clock setting,
host/domain names, `iopl`/`ioperm`. `clone3` answers ENOSYS (its flags live in memory a filter
cannot read), so libc falls back to `clone`, which is checked. Any other ABI (i386, x32) kills.
"""
from __future__ import annotations

import ctypes
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
RET_ALLOW, RET_ERRNO, RET_KILL = 0x7FFF0000, 0x00050000, 0x80000000
EPERM, ENOSYS = 1, 38
AF_INET, AF_INET6 = 2, 10
CLONE_NEW = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
             | 0x40000000)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET

X86_64 = {
    "socket": 41, "socketpair": 53, "clone": 56, "clone3": 435, "prlimit64": 302,
    "unshare": 272, "setns": 308, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 250, "add_key": 248, "request_key": 249, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163,
    "quotactl": 179, "syslog": 103, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
    "clock_adjtime": 305, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "lookup_dcookie": 212, "fanotify_init": 300, "vhangup": 153,
}
DENIED = [n for n in X86_64 if n not in ("socket", "socketpair", "clone", "clone3", "prlimit64")]

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg0: its low 32 bits)


class FilterUnavailable(RuntimeError):
    """This machine's architecture has no filter here."""


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def program() -> list[tuple[int, int, int, int]]:
    """The filter as BPF instructions (code, jt, jf, k)."""
    errno = RET_ERRNO | EPERM
    p = [_ins(_LD_W_ABS, _ARCH), _ins(_JEQ, AUDIT_ARCH_X86_64, 1, 0), _ins(_RET, RET_KILL),
         _ins(_LD_W_ABS, _NR), _ins(_JGE, 0x40000000, 0, 1), _ins(_RET, RET_KILL)]  # x32 ABI
    # socket: only the IP families (no route out of the empty network namespace anyway)
    p += [_ins(_JEQ, X86_64["socket"], 0, 5), _ins(_LD_W_ABS, _ARG0),
          _ins(_JEQ, AF_INET, 1, 0), _ins(_JEQ, AF_INET6, 0, 1),
          _ins(_RET, RET_ALLOW), _ins(_RET, errno)]
    p += [_ins(_JEQ, X86_64["socketpair"], 0, 1), _ins(_RET, errno)]  # AF_UNIX only exists there
    p += [_ins(_JEQ, X86_64["clone"], 0, 4), _ins(_LD_W_ABS, _ARG0), _ins(_JSET, CLONE_NEW, 1, 0),
          _ins(_RET, RET_ALLOW), _ins(_RET, errno)]
    p += [_ins(_JEQ, X86_64["prlimit64"], 0, 4), _ins(_LD_W_ABS, _ARG0), _ins(_JEQ, 0, 0, 1),
          _ins(_RET, RET_ALLOW), _ins(_RET, errno)]
    p += [_ins(_JEQ, X86_64["clone3"], 0, 1), _ins(_RET, RET_ERRNO | ENOSYS)]
    for name in DENIED:
        p += [_ins(_JEQ, X86_64[name], 0, 1), _ins(_RET, errno)]
    p.append(_ins(_RET, RET_ALLOW))
    return p


def install() -> None:
    """Load the filter into this thread (needs no_new_privs, or CAP_SYS_ADMIN); inherited by
    every child and kept across exec. Raises OSError when the kernel refuses it."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise FilterUnavailable(f"no seccomp filter for {platform.machine()}")
    prog = program()
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
