"""flow-plugin-templates: extra ``flow create`` templates for two build kits.

Kit-bound to ``flow-kit-python`` and ``flow-kit-cloudbuild``: ``flow plugin add`` reads
``FLOW_BUILD_KITS`` at install time and binds the plugin to both (declaring a kit that is not
installed yet). ``flow create`` calls ``flow_create_templates(kit=...)`` with the kit the user
chose; this plugin answers with the templates of that kit only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowcore import hookimpl

FLOW_BUILD_KITS = ["flow-kit-python", "flow-kit-cloudbuild"]
FLOW_API = ">=1"

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

#: kit -> [(template name, description)]; each is a copier template under templates/<name>.
TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "flow-kit-python": [
        ("data-script", "A standard-library data script: CSV in, summary out, with tests"),
    ],
    "flow-kit-cloudbuild": [
        ("static-docs-site", "A documentation site: Markdown-free HTML pages, npm build with "
                             "no dependencies, link checks as tests"),
    ],
}


@hookimpl
def flow_create_templates(kit: str) -> list[dict[str, Any]]:
    return [{"name": name, "description": description, "source": str(TEMPLATES_DIR / name),
             "kit": kit} for name, description in TEMPLATES.get(kit, [])]
