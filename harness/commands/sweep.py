"""``harness sweep sweep=<name|file.yaml> [KEY=VALUE ...] [--parallel K] [--retry R] [--dry-run]``.

Runs a sweep preset's points, skipping the completed ones (``harness.driver.sweep``). The
preset is named by ``sweep=`` (one of ``configs/sweep/``, or the path of a preset file, e.g.
one ``harness plan`` wrote); ``sweep.KEY=VALUE`` edits a named preset; every other override
applies to every run, after the preset's own ``overrides``. Exit 0 when every run completed,
1 when one did not, 2 when the command line or config was refused.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.commands._hydra import Command, Flag, Invocation, UsageError
from harness.core import config as C
from harness.core import runspec
from harness.core.compose import key_of, value_of
from harness.driver import launch
from harness.driver import sweep as S


def split(overrides: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(the sweep spec of the last ``sweep=``, the ``sweep.*`` edits, the overrides of every run)."""
    spec, edits, runs = None, [], []
    for o in overrides:
        key = key_of(o)
        if key == "sweep":
            value = value_of(o)
            spec = value if isinstance(value, str) else None
        elif key.startswith("sweep."):
            edits.append(o)
        else:
            runs.append(o)
    return spec, edits, runs


def compose(overrides: list[str]) -> DictConfig:
    """The config every point starts from: the preset's overrides, then the user's; ``sweep`` is the preset."""
    spec, edits, runs = split(overrides)
    if not spec:
        raise UsageError(f"give sweep=<name>; allowed: {', '.join(C.available('sweep'))} or a preset file")
    if edits and spec in C.available("sweep"):
        preset = C.compose([f"sweep={spec}", *edits]).sweep
    elif edits:
        raise UsageError(
            f"{edits[0]!r} is refused: sweep.* edits a named preset; edit the file {spec} instead"
        )
    else:
        preset = S.load_sweep(spec)
    cfg = C.compose([*preset.overrides, *runs])
    cfg.sweep = preset
    return cfg


COMMAND = Command(
    "sweep",
    "Run a sweep preset's points; completed runs are skipped, failures recorded and the sweep goes on.",
    flags=[
        Flag(
            "--parallel",
            "runs at once on this machine (default: the sweep's parallel)",
            metavar="K",
            convert=int,
        ),
        Flag(
            "--retry",
            "which unfinished runs to re-run: failed (crashed, timed out; default), all (also diverged, "
            "oom), none",
            choices=("failed", "all", "none"),
            default="failed",
            metavar="R",
        ),
        Flag("--dry-run", "list the runs and their commands; start nothing", switch=True),
    ],
    compose=compose,
    epilog="example: harness sweep sweep=smoke results_dir=/tmp/r --parallel 2",
)


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


def run(inv: Invocation) -> int:
    sweep = inv.cfg.sweep
    _, _, runs = split(inv.positional)
    if inv.args.dry_run:
        for point in S.expand(sweep, runs):
            if point.cfg is None:
                print(f"# invalid: {point.label}: {point.error}")
            else:
                status = S.status_of(point.cfg) or "new"
                print(f"# {runspec.run_id(point.cfg)} [{status}]\n{launch.dry_run(point.cfg)}")
        return 0
    launch.forward_sigterm()
    records = S.run_sweep(sweep, runs, parallel=inv.args.parallel, retry=inv.args.retry)
    rows = S.summary_rows(records)
    print(S.format_table(rows))
    print(f"summary: {S.write_summary(Path(inv.cfg.results_dir), sweep.name, rows)}")
    return 0 if all(r["status"] == "completed" for r in records) else 1
