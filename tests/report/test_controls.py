"""Control mappings as data: the built-in frameworks, user folders, and every way a
mapping file can be wrong (each a ControlMappingError naming the file and control)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secure_ds.errors import ControlMappingError
from secure_ds.report import EVIDENCE_QUERIES, builtin_controls_dir, load_controls

GOOD = """
[framework]
id = "acme"
name = "ACME internal controls"

[[controls]]
id = "ACME-1"
title = "Every call is authenticated"
evidence = ["all_calls_authenticated"]
"""


def test_builtin_mappings_cover_the_required_controls() -> None:
    frameworks = {fw.id: [c.id for c in fw.controls] for fw in load_controls()}
    assert frameworks == {
        "eu-ai-act": ["Art.12", "Art.19"],
        "iso27001": ["A.5.15", "A.8.15", "A.8.16", "A.8.24"],
        "nist-800-53": ["AU-2", "AU-3", "AU-9", "AU-10", "AU-11", "AU-12"],
        "soc2": ["CC6.1", "CC6.6", "CC7.2", "CC7.3"],
    }
    for fw in load_controls():
        for control in fw.controls:
            assert control.evidence
            assert all(q in EVIDENCE_QUERIES for q in control.evidence)


def test_every_evidence_query_is_documented_and_every_documented_one_exists() -> None:
    readme = (builtin_controls_dir() / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", readme, re.MULTILINE))
    assert documented == set(EVIDENCE_QUERIES)


def test_a_user_folder_adds_its_frameworks_after_the_builtin_ones(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text(GOOD)
    frameworks = load_controls([tmp_path])
    assert frameworks[-1].id == "acme"
    assert frameworks[-1].controls[0].evidence == ("all_calls_authenticated",)
    assert [fw.id for fw in load_controls([tmp_path], builtin=False)] == ["acme"]


def test_an_unknown_evidence_query_names_file_control_and_query(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(GOOD.replace('"all_calls_authenticated"', '"all_calls_authentcated"'))
    with pytest.raises(ControlMappingError) as info:
        load_controls([tmp_path])
    err = info.value
    assert (err.file, err.control, err.query) == (path, "ACME-1", "all_calls_authentcated")
    assert str(path) in str(err)
    assert "ACME-1" in str(err)
    assert "all_calls_authentcated" in str(err)
    assert "all_calls_authenticated" in str(err)  # the known ones are listed


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda t: t.replace('id = "acme"', 'id = "ACME Corp"'), "framework id"),
        (lambda t: t.replace('title = "Every', 'titel = "Every'), "unknown key"),
        (
            lambda t: t.replace('evidence = ["all_calls_authenticated"]', "evidence = []"),
            "evidence",
        ),
        (lambda t: t.replace("[framework]", "[frame]"), "no [framework]"),
        (
            lambda t: (
                t + '\n[[controls]]\nid = "ACME-1"\ntitle = "x"\nevidence = ["cost_metered"]\n'
            ),
            "duplicate control id",
        ),
        (lambda t: t.replace('name = "ACME', "name = ACME"), "TOML"),
    ],
)
def test_malformed_mapping_files_are_refused(tmp_path: Path, edit: object, says: str) -> None:
    (tmp_path / "acme.toml").write_text(edit(GOOD))  # type: ignore[operator]
    with pytest.raises(ControlMappingError, match=re.escape(says)):
        load_controls([tmp_path])


def test_a_framework_id_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "soc2.toml").write_text(GOOD.replace('id = "acme"', 'id = "soc2"'))
    with pytest.raises(ControlMappingError, match="already defined"):
        load_controls([tmp_path])


def test_a_missing_controls_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ControlMappingError, match="does not exist"):
        load_controls([tmp_path / "nope"])
