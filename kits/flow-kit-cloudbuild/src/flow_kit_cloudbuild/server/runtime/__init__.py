"""Where a build's commands run: the bubblewrap sandbox, cgroup limits, seccomp, build uids, the
egress proxy that is a build's only way out, and the process runner that enforces the timeout."""
