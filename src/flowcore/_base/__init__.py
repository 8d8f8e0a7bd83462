"""The foundation every other part of flowcore stands on: paths, errors, file I/O, text
sanitising, prompts, progress and the watch loop. Nothing here imports another part of flowcore,
so any layer may use it (the layer order is in pyproject.toml, ``[tool.flowcore.layers]``)."""
