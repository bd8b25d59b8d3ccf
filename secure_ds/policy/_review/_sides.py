"""The two sides of a review: OLD or NEW resolved to a policy folder (a folder as
given, or a git revision's tree extracted to a temporary directory, regular files
only), and :class:`SideSummary`, what a side is and whether it loaded."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ...errors import SecureDSError
from .._bundle import PolicyBundle, PolicyError

DEFAULT_GIT_PATH = "policies"
_GIT_TIMEOUT = 60.0
_MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # a policy folder is a few KB; refuse a runaway tree


@dataclass(frozen=True)
class SideSummary:
    """What one side of the review is and whether it loaded."""

    spec: str  # as given on the command line
    kind: Literal["folder", "git"]
    location: str  # the folder, or "<commit>:<path>" for a git revision
    revision: str | None  # the bundle's sha256 revision, when it loaded
    policies: int
    models: tuple[str, ...]
    error: str | None  # the PolicyError text when it did not load

    @property
    def loaded(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "location": self.location,
            "revision": self.revision,
            "policies": self.policies,
            "models": list(self.models),
            "loaded": self.loaded,
            "error": self.error,
        }


def _resolve(spec: str, stack: ExitStack, cwd: Path) -> tuple[Literal["folder", "git"], str, Path]:
    """The folder ``spec`` names: itself, or a git revision's tree extracted to a
    temporary directory that lives as long as ``stack``."""
    folder = Path(spec) if Path(spec).is_absolute() else cwd / spec
    if folder.is_dir():
        return "folder", str(folder), folder
    if spec.startswith(("/", "./", "../", "~")) or spec in (".", ".."):
        raise SecureDSError(
            f"No folder {folder}.",
            hint="Check the path; a git revision is given as REV or REV:path, not as a path.",
        )
    rev, _, sub = spec.partition(":")
    sub = sub.strip("/") or DEFAULT_GIT_PATH
    what = f"{spec!r} is not a folder"
    if not rev or rev.startswith("-"):
        raise SecureDSError(
            f"{what}, nor a git revision.",
            hint="Pass a policy folder, or a git revision as REV or REV:path "
            f"(e.g. HEAD~1 or origin/main:{DEFAULT_GIT_PATH}).",
        )
    root = _git(cwd, "rev-parse", "--show-toplevel")
    if root is None:
        raise SecureDSError(
            f"{what}, and {cwd} is not inside a git work tree, so it is not a git revision either.",
            hint="Pass an existing policy folder, or run the review inside the repository.",
        )
    commit = _git(Path(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit is None:
        raise SecureDSError(
            f"{what}, and {rev!r} is not a revision of the git repository at {root}.",
            hint="Use a commit, branch or tag (HEAD~1, main, a sha), or an existing folder; "
            "`git fetch` first if the revision lives on a remote.",
        )
    tree = f"{commit}:{sub}"
    if _git(Path(root), "cat-file", "-t", tree) != "tree":
        raise SecureDSError(
            f"Revision {rev} ({commit[:12]}) has no folder {sub!r}.",
            hint=f"Name the folder as REV:path, the path from the repository root "
            f"(the default is {DEFAULT_GIT_PATH}), e.g. {rev}:{DEFAULT_GIT_PATH}.",
        )
    archive = _git_bytes(Path(root), "archive", "--format=tar", tree)
    target = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="secure-ds-review-")))
    _extract(archive, target, tree)
    return "git", tree, target


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - git with list arguments, no shell
            ["git", "-C", str(cwd), *args],  # noqa: S607 - git as found on PATH
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_bytes(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 - git with list arguments, no shell
            ["git", "-C", str(cwd), *args],  # noqa: S607 - git as found on PATH
            capture_output=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SecureDSError(
            f"Running `git {' '.join(args)}` failed ({exc}).",
            hint="Check that git is installed and the repository is readable.",
        ) from None
    if done.returncode != 0:
        problem = done.stderr.decode("utf-8", "replace").strip()
        raise SecureDSError(
            f"`git {' '.join(args)}` failed: {problem}",
            hint="Check the revision and path, or review a checked-out folder instead.",
        )
    if len(done.stdout) > _MAX_ARCHIVE_BYTES:
        raise SecureDSError(
            f"{args[-1]} is over {_MAX_ARCHIVE_BYTES // 2**20} MiB as a tar archive.",
            hint="Point the review at the policy folder itself (REV:path), not a larger tree.",
        )
    return done.stdout


def _extract(archive: bytes, target: Path, tree: str) -> None:
    """Unpack regular files and folders only, each strictly inside ``target`` (no
    absolute names, no ``..``), so an archive cannot write elsewhere."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if member.name in ("", ".") or member.name == "pax_global_header":
                continue
            if name.is_absolute() or ".." in name.parts:
                raise SecureDSError(
                    f"{tree} holds an entry with an unsafe name ({member.name!r}).",
                    hint="Review a checked-out folder instead.",
                )
            path = target.joinpath(*name.parts)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isfile() members always have data
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(source.read())
            elif member.type == tarfile.XGLTYPE:
                continue  # git's global pax header (the commit id), not a file
            else:
                raise SecureDSError(
                    f"{tree} holds {member.name!r}, which is not a regular file "
                    "(a symbolic link or a submodule).",
                    hint="Policy folders hold plain files only; review a checked-out folder "
                    "to see what the link points at.",
                )


def _summary(
    spec: str,
    kind: Literal["folder", "git"],
    where: str,
    bundle: PolicyBundle | None,
    error: str | None,
) -> SideSummary:
    return SideSummary(
        spec=spec,
        kind=kind,
        location=where,
        revision=bundle.revision if bundle else None,
        policies=len(bundle.policies) if bundle else 0,
        models=tuple(sorted(bundle.models)) if bundle else (),
        error=error,
    )


def _load_problem(error: PolicyError) -> str:
    """A side's load error as the review shows it. ``PolicyError``'s text starts with
    the variable a client reads the folder from (``SECURE_DS_POLICY_DIR: ``), which
    reads oddly here, where the side was named on the command line."""
    return str(error).removeprefix(f"{error.variable}: ")
