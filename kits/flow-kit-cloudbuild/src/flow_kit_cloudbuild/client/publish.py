"""What ``flow publish`` does, step by step (the command's options arrive here).

1. resolve settings (flags, environment, config; :mod:`.settings`);
2. describe the task (name and version from :mod:`.project`, source from :mod:`.source`);
3. run the plugins' ``flow_cloudbuild_publish_checks``; any failed check stops here;
4. check the git branch, or choose the files to upload (``flow_cloudbuild_upload_files``) and
   let the plugins refuse them (``flow_cloudbuild_before_upload``) before the server is
   contacted; pack and upload them; submit; follow the log;
5. on ``done``: ``flow_cloudbuild_artifact_targets``, print the aliases (the prod alias with
   ``--prod``, the branch's) and the deployment URL last, then
   ``flow_cloudbuild_published``.

The hooks are the kit's own (:mod:`flow_kit_cloudbuild.hookspecs`), called through
``context.hook`` typed by :class:`~flow_kit_cloudbuild.hookspecs.CloudBuildHooks`.

``--attach`` and ``--cancel`` skip to following or cancelling a task by id.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import click

from flow_kit_cloudbuild.client import http
from flow_kit_cloudbuild.client.errors import (
    Interrupted,
    PublishError,
    PublishUsageError,
    RefusedError,
    TaskFailed,
)
from flow_kit_cloudbuild.client.render import Renderer
from flow_kit_cloudbuild.client.session import Session
from flow_kit_cloudbuild.client.settings import Settings, resolve
from flow_kit_cloudbuild.protocol import (
    ERROR_EXISTS,
    MAX_UPLOAD_BYTES,
    STATE_CANCELLED,
    STATE_DONE,
    STATE_TIMED_OUT,
)
from flowcore.api import CoreContext, current, interactive, printable_line

if TYPE_CHECKING:
    from flow_kit_cloudbuild.hookspecs import (
        ArtifactTarget,
        CloudBuildHooks,
        Deployment,
        PublishedTask,
        PublishTask,
        UploadFile,
    )

KIT = "flow-kit-cloudbuild"


def _plugin_context() -> CoreContext | None:
    """The kit's context in this run; ``None`` when publish runs without flow (tests)."""
    try:
        return current()
    except LookupError:
        return None


def _project_root(context: CoreContext | None) -> Path:
    root = context.project_root if context is not None else None
    return root if root is not None else Path.cwd()


def _hooks(context: CoreContext | None) -> CloudBuildHooks | None:
    """The kit's hooks of this run, typed; ``None`` without flow (then no plugin is asked)."""
    return None if context is None else cast("CloudBuildHooks", context.hook)


def _dicts(answers: list[Any]) -> list[dict[str, Any]]:
    """The dict items of hook answers that should be lists of dicts, in order: a plugin's
    answer is its own code's, so a lone dict counts as one item and anything else is ignored."""
    items: list[dict[str, Any]] = []
    for answer in answers:
        for item in [answer] if isinstance(answer, dict) else answer if isinstance(answer, list) else []:
            if isinstance(item, dict):
                items.append(item)
    return items


def _choose_files(hooks: CloudBuildHooks | None, root: Path, files: list[str]) -> list[str]:
    """The files to upload once the plugins had their say (``flow_cloudbuild_upload_files``):
    any answer leaving out one of ``files`` drops it, a path an answer adds is appended once.
    An added path must be a file inside ``root``: a plugin cannot make the client send
    ``/etc/passwd`` or a file behind a link out of the project."""
    if hooks is None:
        return files
    answers = [a for a in hooks.flow_cloudbuild_upload_files(project=root, files=list(files))
               if isinstance(a, list | tuple)]
    if not answers:
        return files
    offered = set(files)
    dropped: set[str] = set()
    added: list[str] = []
    for answer in answers:
        dropped |= offered - {p for p in answer if isinstance(p, str)}
        for rel in answer:
            if rel not in offered and rel not in added:
                added.append(_inside(root, rel))
    return [f for f in files if f not in dropped] + added


def _inside(root: Path, rel: object) -> str:
    """``rel`` when it names a file inside ``root`` (no ``..``, not absolute, no link out)."""
    fix = "Fix or remove the plugin that adds it (flow plugin list shows them)"
    if not isinstance(rel, str) or not rel:
        raise PublishError(f"a flow_cloudbuild_upload_files hook returned {rel!r} as a path", fix)
    parts = PurePosixPath(rel).parts
    path = root / rel
    try:
        escapes = (PurePosixPath(rel).is_absolute() or ".." in parts
                   or not path.parent.resolve().is_relative_to(root.resolve()))
    except OSError:
        escapes = True
    if escapes or not (path.is_file() or path.is_symlink()):
        raise PublishError(f"a flow_cloudbuild_upload_files hook added '{rel}', which is not a file "
                           f"inside {root}", fix)
    return PurePosixPath(*parts).as_posix()


def _upload_entries(root: Path, files: list[str]) -> list[UploadFile]:
    """``files`` that exist (a file deleted since the walk is not packed either), with sizes."""
    entries: list[UploadFile] = []
    for rel in files:
        try:
            stat = os.lstat(root / rel)
        except OSError:
            continue
        if not (root / rel).is_dir():
            entries.append({"path": rel, "size": stat.st_size})
    return entries


def run(*, server: str | None, token: str | None, build_cmd: str | None, branch: str | None,
        source: str | None, prod: bool, timeout: int | None, detach: bool,
        attach_id: str | None, cancel_id: str | None, json_mode: bool, force: bool,
        connect_timeout: float | None = None, no_cache: bool = False) -> None:
    if attach_id and cancel_id:
        raise PublishUsageError("--attach and --cancel cannot be combined",
                                "Pass one of them")
    if detach and (attach_id or cancel_id):
        raise PublishUsageError("--detach only applies to a new publish",
                                "Leave out --detach")
    if no_cache and (attach_id or cancel_id):
        raise PublishUsageError("--no-cache only applies to a new publish",
                                "Leave out --no-cache")
    context = _plugin_context()
    settings = resolve(context, server=server, token=token, build_cmd=build_cmd,
                       timeout=timeout, source=source, branch=branch,
                       connect_timeout=connect_timeout)
    renderer = Renderer(json_mode=json_mode)
    session = Session(settings.server, settings.token, notify=renderer.notice,
                      connect_timeout=settings.connect_timeout)
    try:
        if cancel_id:
            _cancel(session, renderer, cancel_id)
        elif attach_id:
            session.connect()
            renderer.notice(f"dashboard: {settings.server}/tasks/{attach_id}")
            session.attach(attach_id, 0)
            _follow_and_finish(session, renderer, attach_id, context, None)
        else:
            _publish(session, renderer, settings, context, prod=prod, force=force,
                     detach=detach, no_cache=no_cache)
    finally:
        session.close()


def _publish(session: Session, renderer: Renderer, settings: Settings,
             context: CoreContext | None, *, prod: bool, force: bool, detach: bool,
             no_cache: bool = False) -> None:
    from flow_kit_cloudbuild.client.project import read_project
    from flow_kit_cloudbuild.client.source import (
        current_branch,
        default_source,
        git_source,
        pack_upload,
        upload_files,
    )

    hooks = _hooks(context)
    root = _project_root(context)
    meta = read_project(root)
    source = settings.source or default_source(root)
    task: PublishTask = {
        "project_root": str(root),
        "kit": getattr(context, "kit", KIT),
        "settings": dict(settings.section),
        "target": settings.server,
        "name": meta.name,
        "version": meta.version,
        "source": source,
        "branch": settings.branch,
        "prod": prod,
        "build_cmd": settings.build_cmd,
        "timeout": settings.timeout,
    }
    checks = [] if hooks is None else hooks.flow_cloudbuild_publish_checks(task=task.copy())
    failed = [c for c in _dicts(checks) if not c.get("ok")]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise PublishError(
            f"pre-build check '{first.get('name', '?')}' failed{more}: "
            f"{str(first.get('message') or 'no message').rstrip('.')}",
            "Fix it and publish again",
        )
    payload: dict[str, Any] = {
        "name": meta.name, "version": meta.version, "source": source,
        "buildCmd": settings.build_cmd, "prod": prod, "force": force,
        "timeout": settings.timeout,
    }
    if settings.spa:  # only when set: a server without deployments refuses the unknown field
        payload["spa"] = True
    if no_cache:  # only when set, for the same reason
        payload["noCache"] = True
    if source == "git":
        branch = git_source(root, settings.branch)
        payload.update(repo=branch.repo, ref=branch.ref)
        task["branch"] = branch.ref
    else:  # the branch alias <project>--<branch> follows the checked-out branch
        local = settings.branch or current_branch(root)
        if local:
            payload["branch"] = local
    files: list[str] = []
    if source == "upload":
        files = _choose_files(hooks, root, upload_files(root))
        if hooks is not None:  # a refusal (FlowError) stops here: nothing packed, nothing sent
            hooks.flow_cloudbuild_before_upload(project=root, files=_upload_entries(root, files))
    session.connect()  # fail fast on a wrong URL or token before packing anything
    if source == "upload":
        archive, count = pack_upload(root, MAX_UPLOAD_BYTES, files)
        renderer.notice(f"uploading {count} files ({len(archive) // 1024 + 1} KiB)")
        payload["uploadId"] = http.upload(settings.server, settings.token, archive,
                                          connect_timeout=settings.connect_timeout)
    task_id = _submit(session, payload, meta.name, meta.version)
    if detach:
        renderer.detached(task_id)
        return
    renderer.notice(f"task {task_id} submitted to {settings.server} "
                    f"(follow it elsewhere with: flow publish --attach {task_id})")
    renderer.notice(f"dashboard: {settings.server}/tasks/{task_id}")
    _follow_and_finish(session, renderer, task_id, context, task)


def _submit(session: Session, payload: dict[str, Any], name: str, version: str) -> str:
    try:
        return session.publish(payload)
    except RefusedError as exc:
        if exc.code != ERROR_EXISTS or payload.get("force"):
            raise
    if not interactive():
        raise PublishUsageError(f"{name} {version} is already released on prod",
                                "Pass --force to overwrite it, or raise the version")
    import questionary

    if not questionary.confirm(f"{name} {version} is already released on prod. Overwrite it?",
                               default=False).ask():
        raise PublishUsageError(f"{name} {version} is already released on prod; not overwritten",
                                "Raise the version, or pass --force")
    return session.publish({**payload, "force": True})


def _follow_and_finish(session: Session, renderer: Renderer, task_id: str,
                       context: CoreContext | None,
                       task: PublishTask | None) -> None:
    final = _follow(session, renderer, task_id)
    data = final.get("data") or {}
    action = data.get("action")
    payload = data.get("payload") or {}
    message = str(payload.get("message") or "").rstrip(".")
    if action != STATE_DONE:
        step = payload.get("step") or renderer.step or "?"
        if action == STATE_CANCELLED:
            raise TaskFailed(f"task {task_id} was cancelled during step '{step}'"
                             + (f": {message}" if message else ""))
        if action == STATE_TIMED_OUT:
            raise TaskFailed(f"task {task_id} timed out during step '{step}'"
                             + (f": {message}" if message else ""),
                             "Raise the limit with --timeout SECONDS")
        raise TaskFailed(f"the build failed at step '{step}'" + (f": {message}" if message else ""),
                         f"See the log above (again with: flow publish --attach {task_id})")
    url = str(payload.get("artifactUrl") or "")
    hooks = _hooks(context)
    artifacts: list[Any] = [a for a in payload.get("artifacts") or [] if isinstance(a, dict)]
    if task is not None and hooks is not None:
        done_task = cast("PublishedTask", {**task, "taskId": task_id, "artifactUrl": url,
                                           "artifacts": artifacts})
        targets = _dicts(hooks.flow_cloudbuild_artifact_targets(task=done_task))
        _deliver(renderer, cast("list[ArtifactTarget]", targets), done_task,
                 session.connect_timeout)
    # The site's index page opens in a browser; the file list (JSON) has its own URL.
    site = next((str(a.get("url")) for a in artifacts
                 if a.get("name") == "index.html" and a.get("url")), None)
    deployment_url = str(payload.get("deploymentUrl") or "")
    if url and (site or deployment_url):
        renderer.notice(f"files: {url}")
    for alias in payload.get("aliases") or []:  # the prod alias (--prod), the branch's alias
        if isinstance(alias, dict) and alias.get("url"):
            renderer.alias(str(alias.get("kind") or "alias"), str(alias["url"]))
    site = deployment_url or site  # the deployment at its own origin opens as a site
    renderer.result_url(site or url)
    if task is not None and hooks is not None:
        deployment: Deployment = {"task_id": task_id, "url": site or url, "files_url": url,
                                  "prod": task["prod"], "name": task["name"],
                                  "version": task["version"], "artifacts": artifacts}
        hooks.flow_cloudbuild_published(deployment=deployment)


def _follow(session: Session, renderer: Renderer, task_id: str) -> dict[str, Any]:
    """Follow to the final message; Ctrl-C asks whether to cancel or detach."""
    while True:
        try:
            return session.follow(task_id, renderer.message, getattr(session, "last_seq", 0))
        except KeyboardInterrupt:
            if _ask_cancel():
                renderer.notice(f"cancelling task {task_id}")
                session.cancel(task_id)
                continue  # the final "cancelled" message follows
            raise Interrupted(f"detached from task {task_id}; it keeps running on the server",
                              f"Follow it with: flow publish --attach {task_id}") from None


def _ask_cancel() -> bool:
    """On a terminal ask "cancel or detach?"; without one, detach."""
    if not interactive():
        return False
    import questionary

    try:
        answer = questionary.select(
            "Interrupted. Cancel the task on the server, or detach and let it run?",
            choices=["detach", "cancel the task"], default="detach",
        ).unsafe_ask()
    except KeyboardInterrupt:
        return False
    return answer == "cancel the task"


def _deliver(renderer: Renderer, targets: list[ArtifactTarget], task: PublishedTask,
             connect_timeout: float = http.CONNECT_TIMEOUT) -> None:
    """Copy the artifacts to the targets plugins named; kinds this client cannot serve are
    reported, not fatal (the build is done either way)."""
    for target in targets:
        kind, url = target.get("kind"), str(target.get("url") or "")
        name = target.get("name", kind)
        if kind == "directory" and url:
            dest = Path(url.removeprefix("file://")).expanduser()
            dest.mkdir(parents=True, exist_ok=True)
            for artifact in task["artifacts"]:
                if isinstance(artifact, dict) and artifact.get("url") and artifact.get("name"):
                    http.download(str(artifact["url"]), dest / Path(str(artifact["name"])).name,
                                  server=str(task["target"]),
                                  connect_timeout=connect_timeout)
            renderer.notice(f"artifacts copied to {dest} (target '{name}')")
        else:
            renderer.notice(f"artifact target '{name}' of kind '{kind}' is not supported by "
                            "this client; skipped")


def _cancel(session: Session, renderer: Renderer, task_id: str) -> None:
    session.connect()
    session.cancel(task_id)
    quiet = Renderer(json_mode=renderer.json_mode, quiet=True)
    session.attach(task_id, 0)
    final = session.follow(task_id, quiet.message)
    action = (final.get("data") or {}).get("action")
    if renderer.json_mode:
        renderer.json_mode = True
        quiet.quiet = False
        quiet.message(final)
    else:
        click.echo(printable_line(f"task {task_id}: {action}"))  # the server's word
    if action not in (STATE_CANCELLED,):
        raise TaskFailed(f"task {task_id} had already ended ({action}) before it could be "
                         "cancelled")
