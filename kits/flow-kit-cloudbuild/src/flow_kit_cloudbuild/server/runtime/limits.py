"""What one sandboxed command holds while it runs: its cgroup and its seccomp program's fd.

Made by ``Sandbox.command_runtime`` just before the command starts, read by ``Sandbox.wrap``
(the cgroup-joining prefix, ``--seccomp FD``) and by ``run_command`` (``pass_fds``), and
finished after the command ended whatever happened (cancel, timeout, log limit): the fd is
closed once the command started, the cgroup is emptied and removed, and ``outcome`` says which
limit the kernel enforced, for the failure message.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from flow_kit_cloudbuild.server.runtime.cgroups import CommandCgroup, Outcome


@dataclass
class CommandRuntime:
    cgroup: CommandCgroup | None           # None: --no-cgroups
    seccomp_fd: int | None
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The fds the command's process must inherit (subprocess ``pass_fds``)."""
        return () if self.seccomp_fd is None else (self.seccomp_fd,)

    def started(self) -> None:
        """The command's process exists (bubblewrap reads the program from its own copy)."""
        if self.seccomp_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.seccomp_fd)
            self.seccomp_fd = None

    def finish(self) -> Outcome:
        """After the command: what was refused; nothing left running; the cgroup removed.
        Blocking (rarely more than a millisecond): call it through ``asyncio.to_thread``."""
        self.started()
        if self.cgroup is not None:
            self.outcome = self.cgroup.finish()
            self.cgroup = None
        return self.outcome
