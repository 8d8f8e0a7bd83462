"""The one check of a kit's or plugin's ``FLOW_API`` against this flowcore's plugin API
(``FLOW_API_VERSION``), with packaging's ``SpecifierSet``. Used where a plugin is installed
(``flowcore.packages.probe``, also for ``flow doctor``) and where it is loaded to build the
command manifest (``flowcore.plugins.system``), so both say the same thing."""

from __future__ import annotations

from flowcore._base.version import FLOW_API_VERSION


def api_problem(spec: object) -> str | None:
    """Why a plugin declaring ``FLOW_API = spec`` cannot run on this flowcore, or ``None`` if
    it can. The reason reads after the plugin's name (``X <reason>``).

    - not declared (``None``), ``""`` or ``"*"``: every API version;
    - a bare version (``"1"``, ``1``, ``"1.0"``): that version exactly, as ``"==1"``;
    - anything else: a PEP 440 specifier set (``">=1"``, ``">=1,<2"``), pre-releases included.
    """
    if spec is None:
        return None
    text = str(spec).strip()
    if text in ("", "*"):
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        specifiers = SpecifierSet(text)
    except InvalidSpecifier:
        try:
            specifiers = SpecifierSet(f"=={Version(text)}")
        except (InvalidVersion, InvalidSpecifier):
            return f"declares FLOW_API = {spec!r}, which is not a version specifier"
    if specifiers.contains(FLOW_API_VERSION, prereleases=True):
        return None
    return f"supports flow plugin API {text} but this flowcore provides API {FLOW_API_VERSION}"
