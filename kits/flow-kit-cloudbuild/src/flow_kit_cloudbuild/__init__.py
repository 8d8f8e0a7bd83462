"""flow-kit-cloudbuild: `flow publish` (client) and `flow-cloudbuild-server` (server).

The wire contract between the two lives in :mod:`flow_kit_cloudbuild.protocol`.
"""

__version__ = "0.1.0"
