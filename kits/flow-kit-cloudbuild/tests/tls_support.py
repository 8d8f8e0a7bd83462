"""A throw-away certificate authority for tests that need real TLS on loopback (the egress
proxy's HTTPS index, Redis over ``rediss://``): openssl makes a CA and a certificate for
127.0.0.1 signed by it, valid for two days."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_ca(where: Path, name: str = "flow test CA") -> tuple[Path, Path, Path]:
    """A CA named ``name`` and a certificate for 127.0.0.1 signed by it, in ``where``:
    (ca.pem, cert.pem, key.pem)."""
    where.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=127.0.0.1")
    (where / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    for f in where.iterdir():
        f.chmod(0o644 if f.suffix == ".pem" and f.name != "key.pem" else 0o600)
    return where / "ca.pem", where / "cert.pem", where / "key.pem"
