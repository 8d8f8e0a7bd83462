"""The install step's side of the egress proxy: runs inside the sandbox, in front of the command.

The install step's network namespace has only loopback (bubblewrap ``--unshare-net``). Its one
way out is the server's egress proxy, whose unix socket is bound into the sandbox. npm, pip and
uv speak HTTP proxy over TCP, not over a unix socket, so this relay listens on
``127.0.0.1:PORT`` inside the namespace and copies every connection to the socket, byte for
byte: it decides nothing (the proxy checks every request), so it needs no trust and may run as
the build's user.

The sandbox runs it as ``python -I -S -c <this file's source> SOCKET PORT -- ARGV...``: the
standard library only, no import of the kit (which need not be visible inside), so it works
with any interpreter the sandbox mounts. It binds the port before it starts ARGV (a build
cannot take the port first), runs ARGV as its child and exits with ARGV's status (128 + N when
ARGV was killed by signal N, as bubblewrap reports it). When the command ends the relay ends,
and bubblewrap's PID namespace takes any connection thread with it.
"""

import os
import signal
import socket
import subprocess
import sys
import threading

MAX_CONNECTIONS = 256   # open relayed connections at once; more are closed at once
CHUNK = 256 * 1024


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """Copy until EOF or an error, then half-close ``dst`` so the other side sees the end."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _relay(conn: socket.socket, path: str, slots: threading.BoundedSemaphore) -> None:
    try:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(path)
        except OSError:
            up.close()
            return
        back = threading.Thread(target=_copy, args=(up, conn), daemon=True)
        back.start()
        _copy(conn, up)
        back.join()
        up.close()
    finally:
        conn.close()
        slots.release()


def _serve(listener: socket.socket, path: str) -> None:
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        if not slots.acquire(blocking=False):
            conn.close()
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_relay, args=(conn, path, slots), daemon=True).start()


def main(args: list[str]) -> int:
    if len(args) < 4 or args[2] != "--":
        print("usage: egress_relay SOCKET PORT -- ARGV...", file=sys.stderr)
        return 2
    path, port, argv = args[0], int(args[1]), args[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    threading.Thread(target=_serve, args=(listener, path), daemon=True).start()
    try:
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127

    def forward(sig: int, _frame: object) -> None:
        try:
            child.send_signal(sig)
        except OSError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main(sys.argv[1:]))
