"""``flow create`` and ``flow update``: template discovery, the template store, rendering
(copier, or cookiecutter in a sandbox unless trusted) and a new project's git repository."""
