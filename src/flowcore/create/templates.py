"""Which templates ``flow create`` can use, and what a template is.

A template comes from one of three places:

* a name: one of the templates the chosen kit and its kit-bound plugins contribute through the
  ``flow_create_templates`` hook;
* a local directory;
* a git URL (``https://``, ``ssh://``, ``git@host:``, ``file://``, ``git+...``, ``gh:``/``gl:``).

Either way it is a copier template (``copier.yml``/``copier.yaml``) or a cookiecutter template
(``cookiecutter.json``); :func:`detect_kind` tells which. The questions of each kind are read
here too, so that ``flow create`` can name every missing answer before anything is rendered.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowcore._base.errors import FlowError, UsageError, warn

if TYPE_CHECKING:
    from flowcore.registry.command_registry import RunWithPlugins

COPIER_FILES = ("copier.yml", "copier.yaml")
COOKIECUTTER_FILE = "cookiecutter.json"
_GIT_PREFIXES = ("git+", "https://", "http://", "ssh://", "git://", "file://", "gh:", "gl:")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")


class Template:
    """One template offered for a kit: ``name``, ``description``, ``source``, ``origin``.

    ``origin`` is the kit or plugin that contributed it (shown in listings and warnings).
    """

    __slots__ = ("name", "description", "source", "kit", "origin")

    def __init__(self, name: str, description: str, source: str, kit: str, origin: str) -> None:
        self.name = name
        self.description = description
        self.source = source
        self.kit = kit
        self.origin = origin

    def __repr__(self) -> str:
        return f"Template({self.name!r}, from {self.origin})"


def is_git_url(spec: str) -> bool:
    return spec.startswith(_GIT_PREFIXES) or bool(_SCP_LIKE.match(spec)) or (
        spec.endswith(".git") and "://" in spec
    )


def looks_like_path(spec: str) -> bool:
    """A ``-t`` value meant as a directory rather than a template name."""
    return spec.startswith((".", "/", "~")) or os.sep in spec or Path(spec).is_dir()


def collect_templates(kit_flow: RunWithPlugins, kit: str) -> list[Template]:
    """Templates of ``kit``: the kit's own, then its kit-bound and general plugins', in load order.

    ``kit_flow`` is a Flow running with ``kit`` in global mode. A malformed entry is dropped with
    a warning; a name already taken by an earlier contributor is dropped with a warning.
    """
    plugins = kit_flow.plugins
    plugins.load_all()
    from flowcore.plugins.system import report

    for failure in plugins.failures:
        report(failure, plugins.strict)
    out: dict[str, Template] = {}
    for plugin, result in plugins.call_loaded("flow_create_templates", kit=kit):
        if not isinstance(result, (list, tuple)):
            warn(f"{plugin.name}: flow_create_templates returned {type(result).__name__}, "
                  "not a list; ignored")
            continue
        for entry in result:
            template = _template_of(entry, plugin.name, kit)
            if template is None or template.kit != kit:
                continue
            if template.name in out:
                warn(f"template '{template.name}' from {plugin.name} is dropped: the name is "
                      f"already taken by {out[template.name].origin}")
                continue
            out[template.name] = template
    return list(out.values())


def _template_of(entry: Any, origin: str, kit: str) -> Template | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(
        entry.get("source"), str
    ) or not entry["name"] or not entry["source"]:
        warn(f"{origin}: a template needs a 'name' and a 'source' (got {entry!r}); ignored")
        return None
    return Template(entry["name"], str(entry.get("description") or ""), entry["source"],
                    str(entry.get("kit") or kit), origin)


# --------------------------------------------------------------------------------------------
# A resolved template: where its files are, and which kind it is
# --------------------------------------------------------------------------------------------


class ResolvedTemplate:
    """A template ready to render.

    ``src`` is what the renderer is given (a directory, or the git URL for copier so that the
    project records where to update from); ``local`` is a directory holding its files (a
    temporary clone for git URLs, removed by :meth:`close`).
    """

    def __init__(self, label: str, src: str, local: Path, kind: str,
                 tmp: Path | None = None, vcs_ref: str | None = None) -> None:
        self.label = label
        self.src = src
        self.local = local
        self.kind = kind
        self._tmp = tmp
        #: the version to render when none is asked for (a kit's template: its store tag)
        self.vcs_ref = vcs_ref

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> ResolvedTemplate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detect_kind(directory: Path) -> str | None:
    """``"copier"``, ``"cookiecutter"`` or ``None`` for a template directory."""
    if any((directory / name).is_file() for name in COPIER_FILES):
        return "copier"
    if (directory / COOKIECUTTER_FILE).is_file():
        return "cookiecutter"
    return None


def resolve(spec: str, templates: list[Template], kit: str, vcs_ref: str | None) -> ResolvedTemplate:
    """Turn a ``-t`` value (or a chosen template name) into a :class:`ResolvedTemplate`."""
    by_name = {t.name: t for t in templates}
    if spec in by_name:  # a name wins; write ./name for a directory of the same name
        template = by_name[spec]
        stored = from_store(template)
        if stored is not None:
            return stored
        return _resolve_source(template.source, f"{spec} ({template.origin})", vcs_ref)
    if is_git_url(spec):
        return _resolve_source(spec, spec, vcs_ref)
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise UsageError(f"template path {spec} does not exist",
                             "Check the path, or pass a template name or a git URL")
        return _resolve_source(str(path.resolve()), spec, vcs_ref)
    names = ", ".join(sorted(by_name)) or "none"
    raise UsageError(f"unknown template '{spec}' for build kit {kit}. Available: {names}",
                     "Pass one of them, a template directory or a git URL with -t")


def _resolve_source(source: str, label: str, vcs_ref: str | None) -> ResolvedTemplate:
    if is_git_url(source):
        tmp = Path(tempfile.mkdtemp(prefix="flow-template-"))
        try:
            local = _clone(source, tmp / "template", vcs_ref)
            kind = _kind_or_fail(local, label)
            src = _copier_git_src(source) if kind == "copier" else source
            return ResolvedTemplate(label, src, local, kind, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    path = Path(source).expanduser()
    if not path.is_dir():
        raise UsageError(f"template {label}: {source} is not a directory",
                         "Check the template's source")
    return ResolvedTemplate(label, str(path.resolve()), path.resolve(), _kind_or_fail(path, label))


def origin_version(origin: str) -> str | None:
    """The installed version of the distribution that contributed a template."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(origin)
    except (PackageNotFoundError, ValueError):
        return None


def from_store(template: Template) -> ResolvedTemplate | None:
    """A kit's or plugin's template directory, rendered from the template store (so the project
    records a repository and a version tag, and ``flow update`` works; see _template_store).

    None when the store does not apply: a git URL, a directory that is a git repository of its
    own (copier reads its tags), an origin without a version, or no git.
    """
    from flowcore.create import template_store as _template_store

    if is_git_url(template.source):
        return None
    path = Path(template.source).expanduser()
    label = f"{template.name} ({template.origin})"
    if not path.is_dir() or (path / ".git").exists() or not _template_store.git_available():
        return None
    version = origin_version(template.origin)
    if version is None:
        return None
    kind = _kind_or_fail(path, label)
    if kind != "copier":
        return None
    repo, tag = _template_store.publish(path.resolve(), origin=template.origin, kit=template.kit,
                                        name=template.name, version=version)
    return ResolvedTemplate(label, str(repo), path.resolve(), kind, vcs_ref=tag)


def _kind_or_fail(directory: Path, label: str) -> str:
    kind = detect_kind(directory)
    if kind is None:
        raise UsageError(
            f"template {label} is neither a copier template ({COPIER_FILES[0]}) nor a "
            f"cookiecutter template ({COOKIECUTTER_FILE})",
            "Pass a directory or git URL holding one of them",
        )
    return kind


def _copier_git_src(source: str) -> str:
    """``source`` in a form copier takes for git (it reads ``file://``, ``ssh://`` as paths)."""
    if source.startswith(("git+", "git@", "git://", "gh:", "gl:")) or source.endswith(".git"):
        return source
    if source.startswith(("https://github.com/", "https://gitlab.com/")):
        return source
    return f"git+{source}"


def _git_url(source: str) -> str:
    if source.startswith("git+"):
        return source[4:]
    if source.startswith("gh:"):
        return f"https://github.com/{source[3:]}.git"
    if source.startswith("gl:"):
        return f"https://gitlab.com/{source[3:]}.git"
    return source


#: A --vcs-ref that may be a commit (full or abbreviated hash), not a branch or tag name.
_COMMITISH = re.compile(r"^[0-9a-fA-F]{4,64}$")


def _clone(source: str, dest: Path, vcs_ref: str | None) -> Path:
    """A clone at ``vcs_ref``, to read the template's kind and questions (copier clones on its
    own). Shallow for a branch or tag; a commit cannot be named to ``git clone --branch``, so a
    ref that looks like a commit hash gets a full clone checked out at that commit."""
    git = shutil.which("git")
    if git is None:
        raise FlowError(f"cannot fetch template {source}: git is not installed",
                        "Install git, or pass a local template directory")
    if vcs_ref and _COMMITISH.match(vcs_ref):
        _git_or_fail(source, [git, "clone", "--quiet", "--no-checkout", "--", _git_url(source),
                              str(dest)])
        commit = _commit_of(git, dest, vcs_ref)
        if commit is None:
            raise FlowError(f"cannot fetch template {source}: it has no commit, branch or tag "
                            f"{vcs_ref}", "Check --vcs-ref")
        _git_or_fail(source, [git, "-C", str(dest), "checkout", "--quiet", "--detach", commit])
        return dest
    cmd = [git, "clone", "--quiet", "--depth", "1"]
    if vcs_ref:
        cmd += ["--branch", vcs_ref]
    _git_or_fail(source, [*cmd, "--", _git_url(source), str(dest)])
    return dest


def _git_or_fail(source: str, cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, check=False)
    if proc.returncode != 0:
        reason = " ".join(proc.stderr.split())[:300] or f"git exited with {proc.returncode}"
        raise FlowError(f"cannot fetch template {source}: {reason}",
                        "Check the URL (and --vcs-ref) and your network")


def _commit_of(git: str, repo: Path, ref: str) -> str | None:
    """The commit ``ref`` names in a fresh clone: a commit hash, else a branch or tag name."""
    for candidate in (ref, f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"):
        proc = subprocess.run([git, "-C", str(repo), "rev-parse", "--verify", "--quiet",
                               f"{candidate}^{{commit}}"],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    return None


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------


class Question:
    """A template question: ``key``, ``has_default``, and whether it may be skipped (``when``)."""

    __slots__ = ("key", "has_default", "conditional")

    def __init__(self, key: str, has_default: bool, conditional: bool = False) -> None:
        self.key = key
        self.has_default = has_default
        self.conditional = conditional


def questions(template: ResolvedTemplate) -> list[Question]:
    """The questions ``template`` asks, in order (private ``_`` keys are settings, not questions)."""
    if template.kind == "copier":
        return _copier_questions(template.local, template.label)
    return _cookiecutter_questions(template.local, template.label)


def _flatten(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def load_copier_yaml(path: Path) -> list[Any]:
    """The documents of a ``copier.yml``, read as copier reads them: safe YAML plus copier's
    ``!include PATTERN`` tag (files matched by a glob relative to the template's root, which
    must stay inside it; their documents take the tag's place), several documents flattened.

    copier's own loader is private (``copier._template``), so this follows its rules.
    """
    import yaml
    from yaml.constructor import ConstructorError

    root = path.parent.resolve()

    class Loader(yaml.SafeLoader):
        """A SafeLoader with copier's tags, without changing the SafeLoader itself."""

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
        if not isinstance(node, yaml.ScalarNode):
            raise ConstructorError(None, None, "!include takes one file pattern",
                                   node.start_mark)
        pattern = str(loader.construct_scalar(node))
        if pattern.startswith("/") or Path(pattern).is_absolute():
            raise ConstructorError(None, None, f"!include {pattern}: the path must be "
                                   "relative to the template", node.start_mark)
        found: list[Any] = []
        for match in sorted(root.glob(pattern)):
            match = match.resolve()
            if not match.is_relative_to(root):
                raise ConstructorError(None, None, f"!include {pattern}: {match} is outside "
                                       "the template", node.start_mark)
            found.extend(_flatten(d for d in yaml.load_all(match.read_bytes(), Loader=Loader)
                                  if d))
        return found

    Loader.add_constructor("!include", include)
    return _flatten(d for d in yaml.load_all(path.read_bytes(), Loader=Loader) if d)


def _copier_questions(directory: Path, label: str) -> list[Question]:
    import yaml

    path = next(directory / n for n in COPIER_FILES if (directory / n).is_file())
    try:
        docs = load_copier_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise FlowError(f"template {label} failed to render: {path.name} is not valid YAML "
                        f"({detail})", "Fix the template") from exc
    found: dict[str, Question] = {}  # a later document's definition of a key wins, as in copier
    for doc in docs:
        if not isinstance(doc, dict):
            raise FlowError(f"template {label} failed to render: {path.name} is not a mapping",
                            "Fix the template")
        for key, value in doc.items():
            if str(key).startswith("_"):
                continue
            if isinstance(value, dict) and ("type" in value or "default" in value
                                            or "help" in value or "choices" in value
                                            or "when" in value):
                found[str(key)] = Question(str(key), "default" in value, "when" in value)
            else:  # `key: value` is a question with a default
                found[str(key)] = Question(str(key), True)
    return list(found.values())


def _cookiecutter_questions(directory: Path, label: str) -> list[Question]:
    import json

    try:
        data = json.loads((directory / COOKIECUTTER_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FlowError(f"template {label} failed to render: {COOKIECUTTER_FILE} is not valid "
                        f"JSON ({exc})", "Fix the template") from exc
    if not isinstance(data, dict):
        raise FlowError(f"template {label} failed to render: {COOKIECUTTER_FILE} is not an "
                        "object", "Fix the template")
    return [Question(k, True) for k in data if not k.startswith("_")]


# --------------------------------------------------------------------------------------------
# Trust: what a template may do without --trust (docs/create.md, "Trust")
# --------------------------------------------------------------------------------------------

#: ``_jinja2_env_vars`` a cookiecutter template may set without ``--trust``: delimiters and
#: whitespace handling. Anything else (``extensions``, ``finalize``, a loader, ...) is code.
SAFE_JINJA_ENV_VARS = frozenset({
    "block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
    "comment_start_string", "comment_end_string", "line_statement_prefix",
    "line_comment_prefix", "trim_blocks", "lstrip_blocks", "newline_sequence",
    "keep_trailing_newline", "autoescape",
})
_TRUST_FIX = "Pass --trust if you trust this template"


def link_escapes(link: Path, root: Path) -> bool:
    """Whether the symlink ``link`` points outside ``root`` (an absolute target always counts:
    it would name another file once the project is moved, or a file of this machine)."""
    target = os.readlink(link)
    if os.path.isabs(target):
        return True
    try:
        resolved = link.parent.resolve() / target
        return not resolved.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a loop: nothing it could name is safe to follow
        return True


def escaping_links(root: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(relative path, target)`` of every symlink under ``root`` that points outside it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        if base == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in sorted(filenames + dirnames):
            path = base / name
            if path.is_symlink() and link_escapes(path, root):
                out.append((path.relative_to(root).as_posix(), os.readlink(path)))
    return out


def check_template_links(template: ResolvedTemplate) -> None:
    """Refuse a template holding a symlink to a file outside it, whatever ``--trust`` says:
    both engines would copy the file it names (``~/.ssh/id_rsa``, say) into the project."""
    found = escaping_links(template.local, skip=(".git",))
    if found:
        rel, target = found[0]
        raise FlowError(f"template {template.label} has a symlink {rel} -> {target}, which "
                        "points outside the template", "A template may link only to its own "
                        "files: replace the link with the file, or use another template")


def check_cookiecutter_trust(template: ResolvedTemplate, trust: bool) -> None:
    """Refuse, without ``--trust``, a cookiecutter template that would run its own code:
    ``_extensions`` (modules imported into Jinja, the template's own ones included), hooks,
    ``_jinja2_env_vars`` beyond delimiters, and nested templates (``templates``), which flow's
    sandboxed renderer leaves to cookiecutter itself."""
    if trust:
        return
    import json

    data = json.loads((template.local / COOKIECUTTER_FILE).read_text(encoding="utf-8"))
    label = template.label
    if data.get("_extensions"):
        names = ", ".join(str(e) for e in data["_extensions"]) if isinstance(
            data["_extensions"], list) else str(data["_extensions"])
        raise FlowError(f"template {label} loads Jinja extensions (_extensions: {names} in "
                        f"{COOKIECUTTER_FILE}), which run the template's own code", _TRUST_FIX)
    hooks = sorted(p.name for p in (template.local / "hooks").glob("*")
                   if p.stem in ("pre_prompt", "pre_gen_project", "post_gen_project"))
    if hooks:
        raise FlowError(f"template {label} has cookiecutter hooks (hooks/{', hooks/'.join(hooks)}), "
                        "which run code while rendering", _TRUST_FIX)
    env_vars = data.get("_jinja2_env_vars") or {}
    unsafe = sorted(str(k) for k in env_vars if k not in SAFE_JINJA_ENV_VARS) if isinstance(
        env_vars, dict) else ["_jinja2_env_vars"]
    if unsafe:
        raise FlowError(f"template {label} configures Jinja with {', '.join(unsafe)} "
                        f"(_jinja2_env_vars in {COOKIECUTTER_FILE}), which can run code",
                        _TRUST_FIX)
    if "templates" in data or "template" in data:
        raise FlowError(f"template {label} is a set of nested cookiecutter templates, which "
                        "flow renders only through cookiecutter itself, unsandboxed", _TRUST_FIX)
