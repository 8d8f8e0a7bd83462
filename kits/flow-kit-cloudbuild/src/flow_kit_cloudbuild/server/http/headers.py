"""Response headers every page and artifact of the server carries (dashboard and artifacts)."""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", PAGE_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# what a published site may be shown as (inline, sandboxed); anything else is a download
_INLINE_TYPES = {"text/html", "text/css", "text/plain", "text/javascript", "application/javascript",
                 "application/json", "image/png", "image/jpeg", "image/gif", "image/webp",
                 "image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "font/woff", "font/woff2"}


def artifact_headers(name: str) -> list[tuple[bytes, bytes]]:
    """Headers of an artifact download (``GET /artifacts/<id>/<name>``).

    Published files are other people's HTML: ``Content-Security-Policy: sandbox`` gives them an
    opaque origin and no scripts, so a published page can never act with a dashboard session;
    ``nosniff`` stops a browser from reading a file as something else than its declared type.
    """
    ctype, _ = mimetypes.guess_type(name)
    filename = name.rsplit("/", 1)[-1].replace('"', "").replace("\\", "")
    if ctype in _INLINE_TYPES:
        text = ctype.startswith("text/") or ctype.endswith(("json", "javascript"))
        value = ctype + ("; charset=utf-8" if text else "")
        disposition = f"inline; filename*=UTF-8''{quote(filename)}"
    else:
        value, disposition = "application/octet-stream", f"attachment; filename*=UTF-8''{quote(filename)}"
    return [(b"content-type", value.encode()), (b"content-disposition", disposition.encode()),
            *ARTIFACT_SECURITY_HEADERS]


ARTIFACT_SECURITY_HEADERS = [(b"content-security-policy", b"sandbox"), (b"x-content-type-options", b"nosniff"),
                             (b"cross-origin-resource-policy", b"same-origin"), (b"referrer-policy", b"no-referrer")]
