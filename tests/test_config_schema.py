"""The one config schema (flowcore.config.schema) drives validation, ``flow config set`` and the
reference section of docs/configuration.md, which must match it byte for byte.

Regenerate the page with: .venv/bin/python -m flowcore.config.reference docs/configuration.md
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowcore._base.errors import ConfigError, UsageError
from flowcore.config import reference, schema
from flowcore.config.global_config import validate_global
from flowcore.config.project_config import validate_project

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "configuration.md"


def test_the_reference_in_the_docs_is_generated_from_the_schema() -> None:
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index(reference.BEGIN):text.index(reference.END) + len(reference.END) + 1]
    assert section == reference.render(), (
        "docs/configuration.md is out of date: run .venv/bin/python -m flowcore.config.reference "
        "docs/configuration.md")


def test_every_key_has_a_known_kind_and_help() -> None:
    for table in (schema.GLOBAL, schema.KIT_ENTRY, schema.PROJECT):
        names = [k.name for k in table]
        assert len(names) == len(set(names))
        for key in table:
            assert key.kind in schema.KINDS and key.help.endswith("."), key


def test_the_package_source_keys_pair_up_by_their_variable() -> None:
    assert schema.SOURCE_SETTINGS == (
        ("indexUrl", "index-url", "FLOW_INDEX_URL", False),
        ("extraIndexUrls", "extra-index-urls", "FLOW_EXTRA_INDEX_URL", True),
        ("findLinks", "find-links", "FLOW_FIND_LINKS", True),
    )


@pytest.mark.parametrize(("data", "message"), [
    ({"schemaVersion": "1"}, "key 'schemaVersion' must be an integer"),
    ({"lastUpdateDate": True}, "key 'lastUpdateDate' must be a number"),
    ({"buildKits": [{"name": "a", "installed": "yes"}]}, "key 'buildKits[0].installed' must be true or false"),
    ({"buildKits": [{"name": "a"}, {"name": "a"}]}, "kit 'a' is listed twice"),
    ({"findLinks": "x"}, "key 'findLinks' must be a list of URLs or paths"),
])
def test_global_validation_names_the_key_and_what_it_must_be(data, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_global(data, "config.json")


def test_a_key_read_elsewhere_is_not_checked_on_load() -> None:
    """``create.git`` and ``watch-ignore`` are checked by their one reader, with its own fix."""
    assert validate_global({"create": {"git": "maybe"}}, "c.json")["create"] == {"git": "maybe"}
    assert validate_project({"watch-ignore": 3}, "p.toml") == {"watch-ignore": 3}
    with pytest.raises(ConfigError, match=r"\[tool.flow\] key 'index-url' must be a URL or a path"):
        validate_project({"index-url": ""}, "p.toml")


def test_config_set_reads_a_value_by_the_keys_kind() -> None:
    assert schema.parse_for_set("create.git", "false") is False
    assert schema.parse_for_set("create.git", "auto") == "auto"
    assert schema.parse_for_set("kitConfig.python.test-args", '["-x"]') == ["-x"]
    assert schema.parse_for_set("someone.elses", "text") == "text"
    assert schema.parse_for_set("create.git", "maybe") == "maybe"  # flow create names the fix
    with pytest.raises(ConfigError, match=r"cannot set 'lastUpdateDate': 'soon' is not a number"):
        schema.parse_for_set("lastUpdateDate", "soon")
    with pytest.raises(UsageError, match="'buildKits' is managed by flow"):
        schema.parse_for_set("buildKits", "[]")
    assert schema.settable_keys() == ["indexUrl", "extraIndexUrls", "findLinks", "create.git"]


def test_a_project_error_names_the_keys_line(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nplugins = 1\n\n[tool.flow]\nbuildkit = "k"\nplugins = "flow-plugin-y"\n')
    with pytest.raises(ConfigError, match=rf"^{path}, line 6: \[tool.flow\] key 'plugins' must be a list"):
        validate_project({"buildkit": "k", "plugins": "flow-plugin-y"}, path)
