"""The throughput law's validation as one call: the published replay and, optionally, leave-largest-out.

``validate`` returns the document ``harness validate`` writes as validate.json: every
published case replayed with one fitted coefficient set (errors in-sample, leave-one-out
and leave-one-source-out), the summary against the target, and, given a results folder,
the law and the USL validated leave-largest-GPU-count-out on this harness's own runs.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.throughput import calibration
from harness.analysis.throughput.measured import leave_largest_out
from harness.core.records import records_table


def measured_leave_largest_out(results: str) -> dict[str, Any]:
    """leave_largest_out on the completed runs under results, or why it could not run."""
    table = records_table(results)
    try:
        return leave_largest_out(table) if not table.empty else {"error": "no completed training records"}
    except (ValueError, KeyError) as e:
        return {"error": f"leave-largest-out not possible: {e}"}


def validate(*, bootstrap: int = 0, results: str | None = None, command: str = "") -> dict[str, Any]:
    """The validation document (JSON-ready): command, summary, calibration, rows, citations, measured."""
    cases = calibration.load_cases()
    cal = calibration.calibrate(cases, n_bootstrap=int(bootstrap))
    rows = calibration.replay(cases, cal)
    return {
        "command": command,
        "summary": calibration.summary(rows),
        "calibration": cal.to_dict(),
        "rows": rows,
        "citations": {k.source: k.citation for k in cases},
        "measured_leave_largest_out": measured_leave_largest_out(results) if results else None,
    }


def meets_target(doc: dict[str, Any]) -> bool:
    """The target (median |error| <= 15%, max <= 30%) met in-sample and leave-one-out."""
    s = doc["summary"]
    return bool(s["meets_target"] and s.get("loo_meets_target", True))
