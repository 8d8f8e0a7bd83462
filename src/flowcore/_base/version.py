"""flowcore's version and the version of its plugin API, in the foundation so that every layer
can name them without importing the package's public surface."""

__version__ = "0.1.0"

#: Version of the plugin API (:mod:`flowcore.api`: hooks, contexts, registry, helpers). Plugins
#: declare a specifier against it in ``FLOW_API`` (e.g. ``">=1"``); ``flow plugin add`` refuses
#: plugins that do not match, and flow skips them when loading.
FLOW_API_VERSION = "1"
