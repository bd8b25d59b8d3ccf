"""Control mappings as data: frameworks whose controls name evidence queries.

The files are TOML (schema in ``audit/controls/README.md``). Loading checks everything
up front, so a typo in a user's mapping fails the export before any work, naming the
file, the control and the query, rather than producing a report that silently lacks
evidence.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ControlMappingError
from ._evidence import EVIDENCE_QUERIES

__all__ = ["Control", "Framework", "builtin_controls_dir", "load_controls"]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_FRAMEWORK_KEYS = {"id", "name", "version"}
_CONTROL_KEYS = {"id", "title", "description", "evidence"}


@dataclasses.dataclass(frozen=True)
class Control:
    id: str
    title: str
    description: str
    evidence: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Framework:
    id: str
    name: str
    version: str
    file: str
    controls: tuple[Control, ...]


def builtin_controls_dir() -> Path:
    """``audit/controls`` of the source tree (the project installs editable)."""
    return Path(__file__).resolve().parents[2] / "audit" / "controls"


def load_controls(dirs: Sequence[Path] = (), *, builtin: bool = True) -> list[Framework]:
    """The frameworks of the built-in mappings (unless ``builtin=False``) and of every
    ``*.toml`` in ``dirs``, in that order; any problem is a :class:`ControlMappingError`."""
    folders: list[Path] = []
    if builtin:
        folders.append(builtin_controls_dir())
    folders.extend(Path(d) for d in dirs)
    frameworks: list[Framework] = []
    seen: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ControlMappingError(
                f"The control mapping folder {folder} does not exist or is not a folder.",
                hint="Pass --controls a folder holding *.toml mapping files.",
                file=folder,
            )
        for path in sorted(folder.glob("*.toml")):
            fw = _load_file(path)
            if fw.id in seen:
                raise ControlMappingError(
                    f"{path}: framework id {fw.id!r} is already defined by {seen[fw.id]}.",
                    hint="Give the framework another id, or remove one of the files.",
                    file=path,
                )
            seen[fw.id] = str(path)
            frameworks.append(fw)
    return frameworks


def _load_file(path: Path) -> Framework:
    def bad(
        problem: str, *, control: str | None = None, query: str | None = None
    ) -> ControlMappingError:
        where = f"{path}" + (f", control {control}" if control else "")
        return ControlMappingError(
            f"{where}: {problem}.",
            hint="Fix the file (schema: audit/controls/README.md).",
            file=path,
            control=control,
            query=query,
        )

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise bad(f"cannot be read as TOML ({exc})") from None
    fw = data.get("framework")
    if not isinstance(fw, dict):
        raise bad("no [framework] table")
    _check_keys(fw, _FRAMEWORK_KEYS, "[framework]", bad)
    fid, name, version = fw.get("id"), fw.get("name"), fw.get("version", "")
    if not isinstance(fid, str) or not _ID.match(fid):
        raise bad("framework id must be a lower-case string like 'soc2'")
    if not isinstance(name, str) or not name:
        raise bad("framework name must be a non-empty string")
    if not isinstance(version, str):
        raise bad("framework version must be a string")
    extra = set(data) - {"framework", "controls"}
    if extra:
        raise bad(f"unknown top-level key(s) {sorted(extra)}")
    raw_controls = data.get("controls")
    if not isinstance(raw_controls, list) or not raw_controls:
        raise bad("no [[controls]]")
    controls: list[Control] = []
    ids: set[str] = set()
    for n, c in enumerate(raw_controls, 1):
        if not isinstance(c, dict):
            raise bad(f"control #{n} is not a table")
        cid = c.get("id")
        if not isinstance(cid, str) or not cid:
            raise bad(f"control #{n} has no id")
        _check_keys(c, _CONTROL_KEYS, f"control {cid}", bad)
        if cid in ids:
            raise bad("duplicate control id", control=cid)
        ids.add(cid)
        title, desc, evidence = c.get("title"), c.get("description", ""), c.get("evidence")
        if not isinstance(title, str) or not title:
            raise bad("title must be a non-empty string", control=cid)
        if not isinstance(desc, str):
            raise bad("description must be a string", control=cid)
        if not isinstance(evidence, list) or not evidence:
            raise bad("evidence must be a non-empty list of query names", control=cid)
        for query in evidence:
            if not isinstance(query, str) or query not in EVIDENCE_QUERIES:
                raise bad(
                    f"unknown evidence query {query!r} (known: {', '.join(EVIDENCE_QUERIES)})",
                    control=cid,
                    query=str(query),
                )
        controls.append(Control(cid, str(title), str(desc), tuple(evidence)))
    return Framework(str(fid), str(name), str(version), str(path), tuple(controls))


def _check_keys(table: dict[str, Any], allowed: Iterable[str], where: str, bad: Any) -> None:
    extra = set(table) - set(allowed)
    if extra:
        raise bad(f"{where} has unknown key(s) {sorted(extra)}")
