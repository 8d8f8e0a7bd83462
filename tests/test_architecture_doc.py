"""docs/architecture.md is a map of the code: what it cites exists, and nothing is missing from it.

* Every module path it cites in backticks (``flowcore/config/trust.py``,
  ``flow_kit_cloudbuild/server/tasks/pipeline.py``; also ``src/...`` and ``kits/<dist>/src/...``)
  is a file, and every package folder it cites (``flowcore/config/``) is a package.
* Every dotted name it cites in backticks (``module.function``, ``Class.method``,
  ``module.Class.method``, ``flowcore.api``) is code: the first part names a module of the three
  packages (by its last dotted parts, e.g. ``pipeline`` or ``redis.store``) or a class defined in
  one, and the rest is defined there (at the top level of the module, or in the class's body).
  A short module name several modules share (``store``, ``config``) may resolve in any of them.
  Names of other code (``click.Context``, ``ctx.meta``) are told apart by their first part
  (``FOREIGN``); file names (``config.json``) by their suffix.
* Every module of ``flowcore``, ``flow_kit_python`` and ``flow_kit_cloudbuild`` is cited by its
  path (template files excluded; an ``__init__.py`` or ``__main__.py`` may be cited as its
  package folder).

Everything is read with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"
SOURCES = {
    "flowcore": REPO / "src" / "flowcore",
    "flow_kit_python": REPO / "kits" / "flow-kit-python" / "src" / "flow_kit_python",
    "flow_kit_cloudbuild": REPO / "kits" / "flow-kit-cloudbuild" / "src" / "flow_kit_cloudbuild",
}
CLOUD = "flow_kit_cloudbuild"

#: First parts of dotted names in the page that are not this repository's code.
FOREIGN = frozenset({
    "asyncio", "click", "ctx", "importlib", "os", "pluggy", "python", "self", "sio", "socketio",
    "sys", "tomllib",
})
#: Suffixes of file names (``config.json``), not code.
FILE_SUFFIXES = frozenset({
    "cfg", "css", "gz", "html", "js", "json", "jsonl", "lock", "md", "pth", "py", "toml", "txt",
    "whl", "yaml", "yml",
})
CODE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"[\w./<>*-]+(?:\.py|/)")


def cited() -> list[str]:
    return CODE.findall(DOC.read_text(encoding="utf-8"))


# -- the modules ------------------------------------------------------------------------------


@cache
def modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of the three packages (packages by their ``__init__``)."""
    found: dict[str, Path] = {}
    for package, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if "templates" in rel.parts:
                continue  # files a template renders into a new project
            parts = [package, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def package_of(module: str) -> str:
    return module.partition(".")[0]


@cache
def definitions(module: str) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """Names defined at the top level of ``module``, and each class's own names."""
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    top: set[str] = set()
    classes: dict[str, frozenset[str]] = {}

    def assigned(node: ast.stmt) -> set[str]:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        return {t.id for t in targets if isinstance(t, ast.Name)}

    for node in tree.body:
        if isinstance(node, ast.If):  # e.g. names defined per Python version
            body = [*node.body, *node.orelse]
        else:
            body = [node]
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                top.add(stmt.name)
            elif isinstance(stmt, ast.ClassDef):
                top.add(stmt.name)
                members: set[str] = set()
                for item in stmt.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        members.add(item.name)
                    elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                        members |= assigned(item)
                classes[stmt.name] = frozenset(members)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                top |= assigned(stmt)
    return frozenset(top), classes


@cache
def module_keys() -> dict[str, list[str]]:
    """Every way the page may name a module (its last dotted parts) -> the modules so named."""
    keys: dict[str, list[str]] = {}
    for module in modules():
        parts = module.split(".")
        for i in range(len(parts)):
            keys.setdefault(".".join(parts[i:]), []).append(module)
    return keys


@cache
def class_homes() -> dict[str, list[str]]:
    """Class name -> the modules defining a class of that name."""
    homes: dict[str, list[str]] = {}
    for module in modules():
        for name in definitions(module)[1]:
            homes.setdefault(name, []).append(module)
    return homes


def defined_in(module: str, rest: list[str]) -> bool:
    top, classes = definitions(module)
    if not rest:
        return True
    if len(rest) == 1:
        return rest[0] in top
    return len(rest) == 2 and rest[1] in classes.get(rest[0], ())


def resolve(name: str) -> tuple[bool, set[str]]:
    """Whether dotted ``name`` is defined, and the packages its first part may point into."""
    parts = name.split(".")
    keys = module_keys()
    for k in range(len(parts), 0, -1):  # the longest leading part that names a module
        candidates = keys.get(".".join(parts[:k]), [])
        if candidates:
            ok = any(defined_in(m, parts[k:]) for m in candidates)
            if not ok and len(parts) - k == 2:  # module.Class.method, the class from elsewhere
                ok = any(defined_in(m, parts[k:]) for m in class_homes().get(parts[k], []))
            return ok, {package_of(m) for m in candidates}
    homes = class_homes().get(parts[0], [])
    ok = len(parts) == 2 and any(parts[1] in definitions(m)[1][parts[0]] for m in homes)
    return ok, {package_of(m) for m in homes}


def dotted_names() -> list[str]:
    out = []
    for text in cited():
        name = text.strip().removesuffix("()")
        if not DOTTED.fullmatch(name):
            continue
        first, last = name.split(".")[0], name.rsplit(".", 1)[1]
        if first in FOREIGN or last in FILE_SUFFIXES:
            continue
        out.append(name)
    return sorted(set(out))


# -- the paths --------------------------------------------------------------------------------


def source_path(text: str) -> tuple[str, Path] | None:
    """``(package, file or folder)`` for a path the page cites into one of the packages."""
    rel = text
    if rel.startswith("src/"):
        rel = rel[len("src/"):]
    elif rel.startswith("kits/"):
        rel = rel.split("/src/", 1)[1] if "/src/" in rel else ""
    package, _, below = rel.partition("/")
    if package not in SOURCES:
        return None
    return package, SOURCES[package] / below


def cited_paths() -> list[tuple[str, str, Path]]:
    """``(as cited, package, path)`` of every module file or package folder the page cites."""
    out = []
    for text in cited():
        text = text.strip()
        if not PATH.fullmatch(text) or any(c in text for c in "<>*"):
            continue
        found = source_path(text)
        if found is not None:
            out.append((text, *found))
    return out


# -- the tests --------------------------------------------------------------------------------


def test_cited_module_paths_exist() -> None:
    def problems(cloud: bool) -> list[str]:
        return [text for text, package, path in cited_paths()
                if (package == CLOUD) == cloud
                and not (path.is_file() if text.endswith(".py") else (path / "__init__.py").is_file())]

    assert not problems(cloud=False), f"docs/architecture.md cites missing modules: {problems(False)}"
    assert not problems(cloud=True), f"docs/architecture.md cites missing modules: {problems(True)}"


def test_cited_names_exist() -> None:
    missing_here, missing_cloud = [], []
    for name in dotted_names():
        ok, packages = resolve(name)
        if ok:
            continue
        if packages and packages <= {CLOUD} or not packages:
            missing_cloud.append(name)  # (unknown first parts too: new modules of the move)
        else:
            missing_here.append(name)
    assert not missing_here, f"docs/architecture.md cites names the code lacks: {missing_here}"
    assert not missing_cloud, f"docs/architecture.md cites names the code lacks: {missing_cloud}"


def test_every_module_is_cited() -> None:
    files = {path.resolve() for _, _, path in cited_paths()}

    def uncited(cloud: bool) -> list[str]:
        out = []
        for module, path in modules().items():
            if (package_of(module) == CLOUD) != cloud:
                continue
            folder_ok = path.name in ("__init__.py", "__main__.py") and path.parent.resolve() in files
            if path.resolve() not in files and not folder_ok:
                out.append(str(path.relative_to(SOURCES[package_of(module)].parent)))
        return sorted(out)

    assert not uncited(cloud=False), f"modules docs/architecture.md does not name: {uncited(False)}"
    assert not uncited(cloud=True), f"modules docs/architecture.md does not name: {uncited(True)}"


def test_cited_repository_files_exist() -> None:
    """The tests and pages "where to change what" points to (``tests/test_<name>*.py``: any)."""
    missing = []
    for text in cited():
        text = text.strip()
        if not re.fullmatch(r"(tests|docs|kits|plugins|benchmarks)/[\w./<>*-]+", text):
            continue
        if "/src/" in text:
            continue  # a module: test_cited_module_paths_exist
        pattern = re.sub(r"\*+", "*", re.sub(r"<[^>]+>", "*", text))
        if not any(REPO.glob(pattern)):
            missing.append(text)
    assert not missing, f"docs/architecture.md cites files that do not exist: {missing}"


def test_the_checks_see_what_they_check() -> None:
    """The page's citations are found at all (a change of the page's style would hide them)."""
    names = dotted_names()
    assert "PluginSystem.load_all" in names and "Pipeline._run" in names
    assert resolve("PluginSystem.load_all")[0] and resolve("flowcore.api.current")[0]
    assert not resolve("PluginSystem.no_such_method")[0]
    assert not resolve("command_registry.no_such_function")[0]
    assert any(text == "flowcore/config/trust.py" for text, _, _ in cited_paths())
