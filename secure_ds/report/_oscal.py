"""The report as OSCAL assessment results, built with compliance-trestle's models.

trestle's pydantic models are generated from NIST's OSCAL JSON schema (the version is
``trestle.oscal.OSCAL_VERSION``); building the document through them validates every
field as it is set, and the JSON written is re-read through the same model before it
is returned, so what leaves here parses as OSCAL of that version.

Mapping: one ``result`` for the report's period; ``reviewed-controls`` lists every
control evaluated; one ``observation`` per evidence query (method ``TEST``: automated,
over the audit log), with its statement; one ``finding`` per control whose target
status is ``satisfied`` when the control is met and ``not-satisfied`` otherwise, with
reason ``fail`` (not met) or ``other`` (cannot attest: OSCAL has no third state, so a
``secure-ds`` property and the remarks say which). What the report cannot attest
(a tampered log first) opens the result's description and its remarks. compliance-
trestle comes with the optional extra ``report``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ReportError

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

__all__ = ["NS", "render_oscal"]

NS = "https://secure-ds.invalid/ns/oscal"
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]")


def _token(text: str) -> str:
    """An OSCAL token (``control-id``, ``prop`` name): letters, digits, ``.``, ``-``, ``_``."""
    out = _NOT_TOKEN.sub("_", text)
    return out if out[:1].isalpha() or out[:1] == "_" else f"_{out}"


def _uuid(*parts: str) -> str:
    # deterministic: the same report gives the same ids (diffable, reproducible)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "secure-ds:" + "/".join(parts)))


def mk(cls: type[M], **fields: Any) -> M:
    """A trestle model from its fields, named in Python (``target_id``) and given to
    the model under their OSCAL names (``target-id``), validated as it is built."""
    return cls.model_validate({k.replace("_", "-"): v for k, v in fields.items()})


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def render_oscal(model: dict[str, Any]) -> str:
    """OSCAL assessment-results JSON for a report model."""
    try:
        from trestle.oscal import OSCAL_VERSION
        from trestle.oscal import assessment_results as ar
        from trestle.oscal import common as c
    except ImportError:
        raise ReportError(
            "OSCAL reports need compliance-trestle, which is not installed.",
            hint="Install the optional extra: pip install -e '.[report]' (or another --format).",
        ) from None

    period, att = model["period"], model["attestation"]
    key = f"{model['log']['path']}|{period['start']}|{period['end']}|{model['generated_at']}"
    generated = _time(model["generated_at"])

    def prop(name: str, value: Any) -> c.Property:
        return mk(c.Property, name=_token(name), ns=NS, value=str(value))

    observations: dict[str, Any] = {}
    findings: list[Any] = []
    selected: list[Any] = []
    for fw in model["controls"]:
        for control in fw["controls"]:
            control_id = _token(f"{fw['framework']}-{control['id']}".lower())
            selected.append(mk(c.SelectControlById, control_id=control_id))
            related = []
            for ev in control["evidence"]:
                if ev["query"] not in observations:
                    observations[ev["query"]] = mk(
                        c.Observation,
                        uuid=_uuid(key, "observation", ev["query"]),
                        title=ev["query"],
                        description=ev["statement"],
                        props=[prop("evidence-status", ev["status"])],
                        methods=["TEST"],
                        types=["finding"],
                        collected=generated,
                    )
                related.append(
                    mk(c.RelatedObservation, observation_uuid=observations[ev["query"]].uuid)
                )
            status = control["status"]
            objective = mk(
                c.ObjectiveStatus,
                state="satisfied" if status == "met" else "not-satisfied",
                reason="pass" if status == "met" else "fail" if status == "not_met" else "other",
                remarks=None if status != "cannot_attest" else "cannot attest from the audit log",
            )
            findings.append(
                mk(
                    c.Finding,
                    uuid=_uuid(key, "finding", control_id),
                    title=f"{fw['name']} {control['id']}: {control['title']}",
                    description=control["description"] or control["title"],
                    props=[
                        prop("framework", fw["framework"]),
                        prop("control", control["id"]),
                        prop("status", status),
                    ],
                    target=mk(
                        c.FindingTarget, type="objective-id", target_id=control_id, status=objective
                    ),
                    related_observations=related,
                )
            )
    statements = att["statements"]
    intact = "intact" if att["log_intact"] else "NOT INTACT"
    description = (
        f"secure-ds compliance report over the audit log {model['log']['path']} "
        f"for {period['from']} to {period['to']} ({model['totals']['calls']} calls; "
        f"log {intact})."
    )
    if statements:
        description += " Cannot attest: " + " ".join(statements)
    result = mk(
        ar.Result,
        uuid=_uuid(key, "result"),
        title=f"Compliance report {period['from']} to {period['to']}",
        description=description,
        start=_time(period["start"]),
        end=_time(period["end"]),
        props=[
            prop("log-intact", str(att["log_intact"]).lower()),
            prop("report-schema", model["schema_version"]),
            prop("log-root", model["integrity"]["verify"]["root"]),
        ],
        reviewed_controls=mk(
            c.ReviewedControls,
            control_selections=[mk(c.ControlSelections, include_controls=selected or None)],
        ),
        observations=list(observations.values()) or None,
        findings=findings or None,
        remarks=statements[0] if statements else None,
    )
    doc = mk(
        ar.AssessmentResults,
        uuid=_uuid(key, "assessment-results"),
        metadata=mk(
            c.Metadata,
            title=f"secure-ds compliance report {period['from']} to {period['to']}",
            last_modified=generated,
            version=model["schema_version"],
            oscal_version=OSCAL_VERSION,
            remarks=f"Generated by {model['generator']}.",
        ),
        # no assessment plan document exists: point at this document itself
        import_ap=mk(ar.ImportAp, href="#", remarks="No separate assessment plan."),
        results=[result],
    )
    text: str = doc.oscal_serialize_json(pretty=True, wrapped=True)
    # read back through the model: what is written parses as OSCAL assessment results
    ar.AssessmentResults.model_validate(json.loads(text)["assessment-results"])
    return text + "\n"
