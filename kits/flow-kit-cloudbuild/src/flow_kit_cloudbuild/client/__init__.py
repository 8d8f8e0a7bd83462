"""The client half of the cloud-build kit: ``flow publish``.

Modules, one job each: :mod:`.command` (the click command, imported on dispatch only),
:mod:`.settings` (server, token and options from flags, environment and config),
:mod:`.project` (name and version), :mod:`.source` (git checks, upload archive),
:mod:`.http` (uploads, task records), :mod:`.session` (the Socket.IO conversation, reconnects)
and :mod:`.render` (human and ``--json`` output). Heavy imports (socketio) happen inside
:mod:`.session` functions only.
"""
