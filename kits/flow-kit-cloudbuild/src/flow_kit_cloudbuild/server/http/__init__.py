"""The server's one HTTP layer: the Starlette app (API, artifacts, dashboard routes) with
python-socketio's ASGI app in front of it, the access checks, the reply helpers and headers."""
