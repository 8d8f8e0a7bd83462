"""The cloud-build kit's hooks: what a plugin bound to flow-kit-cloudbuild can implement.

This module is the reference for plugin authors (``docs/hooks-cloudbuild.md`` is generated from
it and a test keeps the two in step). The kit declares these hooks through the core hook
``flow_addhooks``, so they exist only in a run where flow-kit-cloudbuild is loaded; a plugin
implementing one gets it called by ``flow publish``. Hooks are grouped by the step of
``flow publish`` that calls them.

How to implement one
--------------------

* Declare the kit in the plugin (``FLOW_BUILD_KITS = ["flow-kit-cloudbuild"]``) and implement a
  hook with a module-level function of the same name marked ``@hookimpl``
  (``from flowcore.api import hookimpl``); an implementation may take any subset of the
  arguments, by name.
* Every hook receives ``context`` first: the ``flowcore.api.KitContext`` of the plugin it
  belongs to (its own config section is ``context.config.section``).
* The payloads are TypedDicts declared in this module (listed below): import them from
  ``flow_kit_cloudbuild.hookspecs`` under ``if TYPE_CHECKING:`` to type an implementation.
* flow calls the hooks through pluggy, in load order (the kit's plugins, then general plugins),
  with the isolation of the core hooks: an implementation that raises anything but a
  ``flowcore.api.FlowError`` is reported in one line naming its plugin and left out
  (``--strict-plugins`` makes that an error). A ``FlowError`` is the plugin's word to the user:
  where a hook says it may refuse, raising one stops ``flow publish`` with that error.
* The upload hooks run only with ``--source upload``: with ``--source git`` the server fetches
  the pushed branch itself and the client sends no files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypedDict

from flowcore.api import hookspec

if TYPE_CHECKING:
    from pathlib import Path

    from flowcore.api import KitContext

__all__ = [
    "Artifact", "ArtifactTarget", "CheckResult", "CloudBuildHooks", "Deployment",
    "PublishTask", "PublishedTask", "UploadFile",
    "flow_cloudbuild_publish_checks", "flow_cloudbuild_upload_files",
    "flow_cloudbuild_before_upload", "flow_cloudbuild_artifact_targets",
    "flow_cloudbuild_published",
]


class PublishTask(TypedDict):
    """The publish being prepared, as ``flow publish`` resolved it (read it; do not change it)."""

    #: the project's root directory
    project_root: str
    #: the kit's distribution name
    kit: str
    #: the merged ``[tool.flow.cloudbuild]`` section, no token
    settings: dict[str, object]
    #: the build server's URL
    target: str
    #: the project's name (package.json or pyproject.toml)
    name: str
    #: its version
    version: str
    #: ``"git"`` or ``"upload"``
    source: str
    #: the branch built with ``--source git``
    branch: str | None
    #: ``--prod``: a release
    prod: bool
    #: the build command, split; ``None``: the server's default
    build_cmd: list[str] | None
    #: the task's time limit in seconds
    timeout: int


class CheckResult(TypedDict):
    """One pre-build check's outcome."""

    #: the check's name, unique within the plugin
    name: str
    #: false stops the publish
    ok: bool
    #: one line; for a failed check it says how to fix it
    message: str


class Artifact(TypedDict):
    """One file a done task produced, stored on the server."""

    #: its path inside the build's output folder
    name: str
    #: where the server serves it
    url: str
    #: bytes
    size: int


class PublishedTask(PublishTask):
    """A ``PublishTask`` that ended done: its keys, and the server's task id and artifacts."""

    #: the server's id of the task
    taskId: str
    #: the URL of the task's file list
    artifactUrl: str
    #: every artifact, in the server's order
    artifacts: list[Artifact]


class ArtifactTarget(TypedDict):
    """A place ``flow publish`` delivers the artifacts to."""

    #: unique among the targets (named in what flow prints)
    name: str
    #: ``"directory"`` is delivered; any other kind is reported and skipped
    kind: str
    #: for ``"directory"``: a local path or ``file://`` URL
    url: str


class UploadFile(TypedDict):
    """One file ``--source upload`` is about to pack and send."""

    #: relative to the project root, ``/``-separated
    path: str
    #: bytes on disk (of the link itself for a symbolic link)
    size: int


class Deployment(TypedDict):
    """What a successful ``flow publish`` deployed."""

    #: the server's id of the task
    task_id: str
    #: the URL flow printed last: the deployment at its own origin (an older server: the site's
    #: index.html, else the file list)
    url: str
    #: the URL of the task's file list
    files_url: str
    #: ``--prod``: a release
    prod: bool
    #: the project's name
    name: str
    #: its version
    version: str
    #: every artifact, in the server's order
    artifacts: list[Artifact]


class CloudBuildHooks(Protocol):
    """``context.hook`` as the kit calls it: each call returns the non-``None`` results of the
    implementations, in pluggy's order (``cast(CloudBuildHooks, context.hook)`` types the calls;
    ``context`` is filled in by flow for each implementation)."""

    def flow_cloudbuild_publish_checks(self, *, task: PublishTask) -> list[list[CheckResult]]: ...

    def flow_cloudbuild_upload_files(self, *, project: Path, files: list[str]) -> list[list[str]]: ...

    def flow_cloudbuild_before_upload(self, *, project: Path,
                                      files: list[UploadFile]) -> list[None]: ...

    def flow_cloudbuild_artifact_targets(self, *,
                                         task: PublishedTask) -> list[list[ArtifactTarget]]: ...

    def flow_cloudbuild_published(self, *, deployment: Deployment) -> list[None]: ...


# ---------------------------------------------------------------------------------------------
# Before anything is sent
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_cloudbuild_publish_checks(context: KitContext, task: PublishTask) -> list[CheckResult] | None:
    """Pre-build checks run by ``flow publish`` before anything is sent to the build server.

    When: once per ``flow publish`` (not ``--attach`` or ``--cancel``), after the task has been
    described and before the files are chosen, the branch is checked or the server contacted.

    :param context: this plugin's context.
    :param task: the publish being prepared (a ``PublishTask``: ``project_root``, ``kit``,
        ``settings``, ``target``, ``name``, ``version``, ``source``, ``branch``, ``prod``,
        ``build_cmd``, ``timeout``); read it, do not change it.

    Return: a list of ``CheckResult`` dicts (``name``, ``ok``, ``message``). The lists of all
    plugins are concatenated; ``flow publish`` stops with exit code 1 when any result has
    ``ok`` false, naming the first: ``pre-build check 'NAME' failed: MESSAGE``. ``None`` or
    ``[]`` means nothing to check.
    """


@hookspec
def flow_cloudbuild_upload_files(context: KitContext, project: Path, files: list[str]) -> list[str] | None:
    """Choose the files ``--source upload`` sends: add some, or drop some.

    When: once per ``flow publish --source upload``, after the publish checks passed, before
    ``flow_cloudbuild_before_upload``.

    :param context: this plugin's context.
    :param project: the project's root directory.
    :param files: the kit's choice, paths relative to ``project`` with ``/``: every file of the
        folder minus what ``.gitignore`` and ``.flowignore`` exclude and minus dependency, build
        and VCS folders. Every implementation is given this same list.

    Return: the list this plugin wants sent, or ``None`` for no opinion. How the answers
    combine: a file of ``files`` that any answer leaves out is dropped (a drop always wins);
    a file an answer names that is not in ``files`` is added (an ignored file, a generated
    one), once, after the kit's files in load order. An added path must be relative, stay
    inside the project and name a file there, else ``flow publish`` stops naming it.
    """


@hookspec
def flow_cloudbuild_before_upload(context: KitContext, project: Path, files: list[UploadFile]) -> None:
    """Inspect the files about to be uploaded, and refuse the upload if need be.

    When: once per ``flow publish --source upload``, after ``flow_cloudbuild_upload_files``,
    before the server is contacted and before anything is packed or sent.

    :param context: this plugin's context.
    :param project: the project's root directory.
    :param files: what will be sent, as ``UploadFile`` dicts (``path`` relative to ``project``
        with ``/``, ``size`` in bytes), in upload order. Read files through ``project / path``
        and read them bounded: they are the user's, any size.

    Return: ignored. To refuse, raise ``flowcore.api.FlowError(cause, fix)``: the cause names
    the file and the fix says how to send it anyway; ``flow publish`` prints it, exits 1 and
    sends nothing to the server.
    """


# ---------------------------------------------------------------------------------------------
# After the build is done
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_cloudbuild_artifact_targets(context: KitContext,
                                     task: PublishedTask) -> list[ArtifactTarget] | None:
    """Extra places a successful cloud build's artifacts are delivered to.

    When: once per ``flow publish`` that ends with the task **done** (not on ``--attach``),
    after the server has stored the artifacts and before the URL is printed. Not called for a
    failed, cancelled or timed-out task.

    :param context: this plugin's context.
    :param task: a ``PublishedTask``: the publish task (see
        ``flow_cloudbuild_publish_checks``) plus ``taskId``, ``artifactUrl`` and ``artifacts``
        (a list of ``Artifact`` dicts: ``name``, ``url``, ``size``).

    Return: a list of ``ArtifactTarget`` dicts (``name``, ``kind``, ``url``). The client
    downloads every artifact into targets of kind ``"directory"`` (``url`` a local path or
    ``file://`` URL), from the server it publishes to only, and reports other kinds as
    skipped. Lists of all plugins are concatenated; ``None`` or ``[]`` adds nothing.
    """


@hookspec
def flow_cloudbuild_published(context: KitContext, deployment: Deployment) -> None:
    """A publish succeeded: announce it, record it, open it.

    When: once per ``flow publish`` that ends with the task **done** (not on ``--attach``),
    after the artifacts were delivered and the URL printed.

    :param context: this plugin's context.
    :param deployment: a ``Deployment``: ``task_id``, ``url`` (what flow printed), ``files_url``,
        ``prod``, ``name``, ``version`` and ``artifacts``.

    Return: ignored. The deployment stands whatever happens here: an implementation that
    raises is reported and left out, and a ``FlowError`` makes the exit code 1 after the URL
    was printed. Keep output on stderr (``context.logger`` or ``flowcore.api.warn``): the URL
    is the last line of stdout.
    """
