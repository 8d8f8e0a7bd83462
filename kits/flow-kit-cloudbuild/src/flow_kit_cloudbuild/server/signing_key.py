"""The server's provenance signing key (Ed25519): from a file, derived from the shared secret, or
made once in the data directory.

Three sources, chosen by the server's command line (``--provenance-key FILE``, else derived from
``--secret-file``, else :func:`load_or_create`):

* :func:`load_key`: an operator's own key (PEM PKCS8), e.g. one kept in a secrets manager;
* :func:`derive_key`: every gateway and worker of a Redis deployment already holds the same
  ``--secret-file`` secret; a key derived from it (HKDF-SHA256 with its own ``info``, so it says
  nothing about the secret and no other use of the secret yields it) means every process signs
  with one key and there is nothing new to distribute;
* :func:`load_or_create`: the embedded server's default, ``<data>/provenance-key.pem``, made on
  the first start and the same key after every restart, so statements signed before a restart
  still verify with the key users saved.

``cryptography`` is imported inside these functions only, as everywhere in the kit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from flow_kit_cloudbuild.server.errors import ServerConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["DEFAULT_KEY_NAME", "HKDF_INFO", "load_key", "derive_key", "load_or_create"]

#: The embedded default's file name in the server's data directory.
DEFAULT_KEY_NAME = "provenance-key.pem"
#: HKDF's ``info`` for the provenance key: binds the derived key to this one purpose and version.
HKDF_INFO = b"flow-cloudbuild provenance v1"
#: The largest key file read (an Ed25519 PKCS8 PEM is 119 bytes).
MAX_KEY_FILE_BYTES = 64 * 1024


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing anything but a small regular file (a FIFO would block forever)."""
    import stat

    hint = "Pass an Ed25519 private key in PEM (openssl genpkey -algorithm ed25519 -out key.pem)"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ServerConfigError(f"cannot read the provenance key {path}: {exc.strerror or exc}", hint) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ServerConfigError(f"the provenance key {path} is not a regular file", hint)
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ServerConfigError(f"the provenance key {path} is larger than {MAX_KEY_FILE_BYTES} bytes, so not a key",
                                hint)
    return data


def load_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (PEM, PKCS8, unencrypted).

    Anything else (another algorithm, an encrypted or public key, not PEM) is a ServerConfigError
    naming the file and how to make a right one: the server must not start unable to sign.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    hint = "Pass an Ed25519 private key in PEM (openssl genpkey -algorithm ed25519 -out key.pem)"
    data = _read_bounded(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: a server starting unattended has no one to ask for the password
        raise ServerConfigError(f"the provenance key {path} is encrypted",
                                "Pass it unencrypted (openssl pkey -in IN -out key.pem) and protect the file "
                                "with its permissions (chmod 600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ServerConfigError(f"the provenance key {path} is not a PEM private key", hint) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ServerConfigError(f"the provenance key {path} is not an Ed25519 key", hint)
    return key


def derive_key(secret: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key every process holding ``secret`` (``--secret-file``) derives alike.

    HKDF-SHA256 (no salt: the secret is already uniformly random, and every process must reach
    the same key) over the secret with :data:`HKDF_INFO`, 32 bytes as the Ed25519 seed.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if not secret:
        raise ServerConfigError("the secret to derive the provenance key from is empty",
                                "Put a random secret in --secret-file (head -c 32 /dev/urandom | base64 > FILE)")
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The key in ``path``, made there first if there is none (the embedded server's default).

    Made once, atomically and private: the PEM is written to a new 0600 file beside ``path``,
    then hard-linked to ``path``, which fails if the file exists by then; so two servers starting
    on one data directory at once end with one key (the loser loads the winner's), and a server
    killed while writing leaves no half-written key under ``path``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path.exists() or path.is_symlink():
        return load_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:  # another process made it first: one key for the data directory
            return load_key(path)
        with contextlib.suppress(OSError):  # the new name is durable once its directory is
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        raise ServerConfigError(f"cannot write the provenance key {path}: {exc.strerror or exc}",
                                "Make the data directory writable, or pass --provenance-key FILE") from None
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    return key
