"""``harness extrapolate [cluster=colossus] [model=gpt3-175b] [KEY=VALUE ...] [--results DIR] [--out DIR]``.

The plan for a target cluster: budget, MFU, tokens/s, efficiency curve, time to train, goodput,
compute-optimal N*, D* and loss (``harness.analysis.extrapolate_run.build``). Its keys are at
the top of its config (``days=90 gpus=1024 checkpoint_s=20``; ``harness extrapolate --help``
lists them); the cluster and model presets are used whole. Prints a Markdown summary and
writes ``extrapolate.json`` and ``extrapolate.md`` under --out (default results/extrapolate/).
The loss law is fitted to the completed runs under --results when they suffice (auto), else
to the bundled Chinchilla points; ``--critical-batch`` caps the global batch at B_crit(L).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.analysis import extrapolate_run
from harness.commands._hydra import Command, Flag, Invocation
from harness.core.config_jobs import CRITICAL_BATCH_LAWS, LOSS_LAWS, ExtrapolateConfig, validate_extrapolate
from harness.core.io import atomic_write_text, write_json
from harness.report.extrapolate_md import markdown

COMMAND = Command(
    "extrapolate",
    "The plan for a target cluster (default colossus, 100,000 H100) and model (default GPT-3 175B).",
    config="extrapolate",
    flags=[
        Flag(
            "--results", "completed runs to fit the loss and throughput laws to", key="results", metavar="DIR"
        ),
        Flag("--out", "output folder", key="out", metavar="DIR"),
        Flag("--loss-law", "which loss law answers", key="loss_law", choices=LOSS_LAWS, metavar="LAW"),
        Flag(
            "--critical-batch",
            f"cap the global batch at B_crit(L): {', '.join(CRITICAL_BATCH_LAWS)} or a number of tokens",
            key="critical_batch",
            metavar="SPEC",
        ),
    ],
    errors=(extrapolate_run.UsageError,),
    fixed=("cluster", "model"),
    epilog="example: harness extrapolate cluster=colossus model=gpt3-175b days=90 gpus=1024 --out /tmp/x",
)


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


def options(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as ``build``'s options: the presets by name, every other key as it is."""
    opts: dict[str, Any] = {
        f.name: OmegaConf.to_container(cfg[f.name]) if OmegaConf.is_config(cfg[f.name]) else cfg[f.name]
        for f in fields(ExtrapolateConfig)
        if f.name not in ("cluster", "model")
    }
    return {"cluster": cfg.cluster.name, "model": cfg.model.name, **opts}


def run(inv: Invocation) -> int:
    validate_extrapolate(inv.cfg)
    opts = options(inv.cfg)
    res = extrapolate_run.build(opts)
    res["command"] = " ".join(["harness extrapolate", *inv.argv])
    md = markdown(res, opts)
    out = Path(opts["out"])
    write_json(out / "extrapolate.json", res)
    atomic_write_text(out / "extrapolate.md", md)
    print(md)
    print(f"wrote {out / 'extrapolate.json'} and {out / 'extrapolate.md'}")
    return 0
