"""pluggy markers for the ``flow`` project; imported lazily by ``flowcore.__getattr__``."""

import pluggy

PROJECT_NAME = "flow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
