"""The Redis URL of a deployment: credentials in, never out.

redis-py takes AUTH (``redis://:PASSWORD@HOST`` for the default user, ``redis://USER:PASSWORD@HOST``
for an ACL user) and TLS (``rediss://``, with ``ssl_ca_certs=...`` and friends as query
parameters) from the URL, and every part of the server (the store, the queue, the Socket.IO
manager, the start-up probe) is made from that one URL. So this module only

* puts a password read from ``--redis-password-file`` into the URL (a password on the command
  line is visible to every user in ``ps``; the file is hidden from builds like the tokens file);
* shows the URL without its password (``redact``), wherever the server prints or logs it;
* says why Redis cannot be used at start (``problem``), in one line naming the cause and the
  fix, without the password: a refused password is the usual first mistake, a TLS certificate
  signed by a CA the server does not know (``ssl_ca_certs=`` missing or wrong) the next.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from flow_kit_cloudbuild.server.errors import ServerConfigError

URL_ENV = "FLOW_CLOUDBUILD_REDIS_URL"
SCHEMES = ("redis", "rediss", "unix")


def _netloc(user: str | None, password: str | None, host: str) -> str:
    if password is not None:
        return f"{user or ''}:{password}@{host}"
    return f"{user}@{host}" if user else host


def _host(parts: object) -> str:
    """``HOST:PORT`` of a split URL as written (brackets of an IPv6 address kept)."""
    netloc = str(getattr(parts, "netloc", ""))
    return netloc.rsplit("@", 1)[-1]


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (the user name stays: it says which ACL user)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return urlunsplit(parts._replace(netloc=_netloc(parts.username, "***", _host(parts))))
    except ValueError:
        return "<a Redis URL that cannot be parsed>"


def with_password(url: str, password_file: Path | None) -> str:
    """``url`` with the password from ``password_file`` (its first line), if one is given."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ServerConfigError("--redis-url is not a URL", "Write it like redis://HOST:6379/0") from None
    if parts.scheme not in SCHEMES:
        raise ServerConfigError(f"--redis-url must start with redis://, rediss:// or unix:// (not {parts.scheme}://)",
                                "Write it like rediss://USER@HOST:6380/0 (rediss: TLS)")
    if password_file is None:
        return url
    if parts.password is not None:
        raise ServerConfigError(f"{redact(url)} already holds a password and --redis-password-file gives another",
                                "Keep the password in one place: the file (redis://USER@HOST:PORT/0)")
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise ServerConfigError(f"cannot read the Redis password file {password_file}: {why}",
                                "Pass an existing file to --redis-password-file") from None
    password = lines[0].strip() if lines else ""
    if not password:
        raise ServerConfigError(f"the Redis password file {password_file} is empty",
                                "Put the password on its first line")
    return urlunsplit(parts._replace(netloc=_netloc(parts.username, quote(password, safe=""), _host(parts))))


FIX_AUTH = (f"Put the right password in the URL (redis://:PASSWORD@HOST:PORT/0, or redis://USER:PASSWORD@... "
            f"for an ACL user) through {URL_ENV}, or give it with --redis-password-file")


FIX_TLS = ("Give the CA that signed Redis's certificate in the URL: rediss://HOST:PORT/0?ssl_ca_certs=/path/ca.pem "
           "(a PEM file readable by the server)")


def _ca_file_problem(url: str, shown: str) -> ServerConfigError | None:
    """The CA file named by ``ssl_ca_certs=``, if it cannot be read (redis-py would say only
    ``No such file or directory``, as if Redis were the missing file)."""
    try:
        named = parse_qs(urlsplit(url).query).get("ssl_ca_certs", [])
    except ValueError:
        return None
    for name in named:
        try:
            Path(name).read_bytes()
        except OSError as exc:
            return ServerConfigError(f"cannot read the CA file {name} that --redis-url ({shown}) names in "
                                     f"ssl_ca_certs: {exc.strerror}", FIX_TLS)
    return None


def _tls_problem(exc: BaseException, text: str, shown: str) -> ServerConfigError | None:
    """The one-line error for a TLS certificate the server does not accept, else None."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ssl.SSLCertVerificationError):
        seen = seen.__cause__ or seen.__context__
    if seen is None and "CERTIFICATE_VERIFY_FAILED" not in text:
        return None
    why = str(getattr(seen, "verify_message", "") or "") or text[:300]
    if "mismatch" in why:
        return ServerConfigError(f"Redis at {shown} sent a TLS certificate for another name: {why}",
                                 "Connect by a host name or address that Redis's certificate holds")
    return ServerConfigError(f"Redis at {shown} sent a TLS certificate this server does not trust: {why}", FIX_TLS)


def problem(url: str) -> ServerConfigError | None:
    """None when Redis answers PING at ``url``; else the one-line error to stop with."""
    import redis

    shown = redact(url)
    ca_problem = _ca_file_problem(url, shown)
    if ca_problem is not None:
        return ca_problem
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure (refused, auth, TLS, DNS, bad URL) is reported
        text = " ".join(str(exc).split()) or type(exc).__name__
        has_password = urlsplit(url).password is not None
        if isinstance(exc, redis.exceptions.AuthenticationError) or any(
                word in text for word in ("NOAUTH", "WRONGPASS", "username-password", "authenticated")):
            if has_password:
                return ServerConfigError(f"Redis at {shown} refused the password: {text.rstrip('.')[:200]}", FIX_AUTH)
            return ServerConfigError(f"Redis at {shown} wants a password and the URL has none", FIX_AUTH)
        tls = _tls_problem(exc, text.replace(url, shown), shown)
        if tls is not None:
            return tls
        return ServerConfigError(f"cannot reach Redis at {shown}: {text[:300].replace(url, shown)}",
                                 "Start Redis or fix --redis-url (rediss:// for TLS)")
    return None
