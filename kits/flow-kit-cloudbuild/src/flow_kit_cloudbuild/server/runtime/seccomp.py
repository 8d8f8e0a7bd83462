"""The seccomp filter every build command runs under: the kernel surface a build does not need.

In the spirit of the container runtimes' default profile (Docker/containerd/Podman): calls that
manage the kernel, make or enter namespaces, mount, trace other processes or reach little-used,
bug-prone kernel code fail with ``EPERM``; everything else is allowed. bubblewrap loads the
program (``--seccomp FD``) just before it runs the command, after its own namespace setup.

Why the program is assembled here and not built with libseccomp: it is about forty classic-BPF
instructions (``struct sock_filter``), needs no C library or binding on the server, and reads
top to bottom as the list of what is denied. The structure is the one libseccomp emits:

1. the audit architecture must be the server's (``AUDIT_ARCH_X86_64`` / ``AUDIT_ARCH_AARCH64``);
   anything else (i386 ``int 0x80``, x32) kills the process: syscall numbers differ per ABI, so a
   filter for one would let another's calls through;
2. denied syscall numbers return ``EPERM``;
3. ``clone`` and ``unshare`` are allowed without namespace flags (threads and ``fork`` use
   ``clone``); ``clone3`` passes its flags in memory that seccomp cannot read, so it returns
   ``ENOSYS`` and libc falls back to ``clone``, as under Docker;
4. ``personality`` only with the values Docker allows (``PER_LINUX``, the query, ``UNAME26``
   and ``ADDR_NO_RANDOMIZE``).
"""

from __future__ import annotations

import errno
import os
import platform
import struct

# Classic BPF (linux/filter.h, linux/bpf_common.h)
_LD_W_ABS = 0x20      # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15         # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35         # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45        # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06         # BPF_RET | BPF_K
# linux/seccomp.h
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_NR, _ARCH, _ARG0_LOW = 0, 4, 16    # args[0]'s low word on these little-endian machines

#: Namespace flags of clone/unshare (linux/sched.h): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
#: NEWPID, NEWNET. (NEWTIME, 0x80, shares clone's exit-signal bits and is refused by unshare only.)
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
CLONE_NEWTIME = 0x00000080
#: personality() values allowed (Docker's list): PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE, both, query.
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

#: Denied calls. Keys of the kernel (kexec, modules, reboot, swap, acct, quotas), keyrings, eBPF
#: and perf (large attack surface), mounting (old and new mount API), tracing other processes,
#: userfaultfd (a favourite of kernel exploits), namespaces (setns), handle-based opens that
#: bypass paths, the removed lookup_dcookie, io_uring (outside seccomp's view: its operations
#: are not syscalls), time setting, and the kernel log.
DENIED = (
    "add_key", "keyctl", "request_key", "bpf", "perf_event_open",
    "mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "userfaultfd", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "nfsservctl", "uselib",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog",
    "iopl", "ioperm",
)

#: Per architecture: (AUDIT_ARCH, syscall numbers). x86_64 from asm/unistd_64.h, aarch64 from
#: asm-generic/unistd.h; a name an architecture lacks is left out.
ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "add_key": 248, "keyctl": 250, "request_key": 249, "bpf": 321, "perf_event_open": 298,
        "mount": 165, "umount2": 166, "pivot_root": 155, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "pidfd_getfd": 438, "userfaultfd": 323, "setns": 308,
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163,
        "quotactl": 179, "quotactl_fd": 443, "open_by_handle_at": 304, "name_to_handle_at": 303,
        "lookup_dcookie": 212, "nfsservctl": 180, "uselib": 134,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
        "syslog": 103, "iopl": 172, "ioperm": 173,
        "clone": 56, "clone3": 435, "unshare": 272, "personality": 135,
    }),
    "aarch64": (0xC00000B7, {
        "add_key": 217, "keyctl": 219, "request_key": 218, "bpf": 280, "perf_event_open": 241,
        "mount": 40, "umount2": 39, "pivot_root": 41, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "pidfd_getfd": 438, "userfaultfd": 282, "setns": 268,
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89,
        "quotactl": 60, "quotactl_fd": 443, "open_by_handle_at": 265, "name_to_handle_at": 264,
        "lookup_dcookie": 18, "nfsservctl": 42,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171,
        "syslog": 116,
        "clone": 220, "clone3": 435, "unshare": 97, "personality": 92,
    }),
}
_X32_BIT = 0x40000000   # x86_64: syscalls of the x32 ABI share the arch value; refuse them


class SeccompUnavailable(Exception):
    """No filter is known for this machine's architecture."""


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(machine: str | None = None) -> bytes:
    """The filter program for ``machine`` (default: this one), as bubblewrap reads it."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise SeccompUnavailable(f"no seccomp filter for the {machine} architecture (x86_64 and aarch64 only)")
    arch, nrs = ARCHES[machine]
    eperm = _ins(_RET_K, RET_ERRNO | errno.EPERM)
    allow = _ins(_RET_K, RET_ALLOW)
    prog = [_ins(_LD_W_ABS, _ARCH), _ins(_JEQ_K, arch, jt=1), _ins(_RET_K, RET_KILL_PROCESS),
            _ins(_LD_W_ABS, _NR)]
    if machine == "x86_64":
        prog += [_ins(_JGE_K, _X32_BIT, jf=1), _ins(_RET_K, RET_KILL_PROCESS)]
    for name in DENIED:
        if name in nrs:        # A holds the syscall number: "if nr == N: return EPERM"
            prog += [_ins(_JEQ_K, nrs[name], jf=1), eperm]
    prog += [_ins(_JEQ_K, nrs["clone3"], jf=1), _ins(_RET_K, RET_ERRNO | errno.ENOSYS)]
    # Each block below returns, so A still holds the number when a block is skipped.
    for name, flags in (("clone", NAMESPACE_FLAGS), ("unshare", NAMESPACE_FLAGS | CLONE_NEWTIME)):
        block = [_ins(_LD_W_ABS, _ARG0_LOW), _ins(_JSET_K, flags, jf=1), eperm, allow]
        prog += [_ins(_JEQ_K, nrs[name], jf=len(block)), *block]
    checks = [_ins(_JEQ_K, value, jt=len(PERSONALITIES) - i) for i, value in enumerate(PERSONALITIES)]
    block = [_ins(_LD_W_ABS, _ARG0_LOW), *checks, eperm, allow]
    prog += [_ins(_JEQ_K, nrs["personality"], jf=len(block)), *block]
    prog.append(allow)
    return b"".join(prog)


def filter_fd(program: bytes) -> int:
    """A file descriptor holding ``program`` at offset 0, for ``bwrap --seccomp FD``: a memfd
    (no file on disk), inheritable by the bubblewrap it is passed to with ``pass_fds``. The
    caller closes it once the command started."""
    fd = os.memfd_create("flow-build-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
