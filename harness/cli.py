"""``harness <command> [args]``: one entry point, each command in its own module.

Commands that take a run config (train, sweep, ...) read Hydra overrides
(``key=value``); the analysis commands take ordinary flags. Modules are imported
lazily so ``harness fit`` never pays for torch.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("harness.driver.launch:train_main", "one data-parallel training run (Hydra overrides)"),
    "prepare-data": ("harness.datasets.tokens:prepare_main", "text files -> memory-mapped byte-token dir"),
    "sweep": ("harness.driver.sweep:main", "run a sweep of runs, skipping completed ones"),
    "plan": ("harness.driver.planner:main", "plan an IsoFLOP sweep around a prior law's optimum"),
    "fit": ("harness.analysis.fit_cmd:main", "fit loss laws to run records or a CSV"),
    "compare-fits": (
        "harness.analysis.compare_fits:main",
        "how tightly different sweeps pin the same loss law",
    ),
    "critical-batch": ("harness.analysis.critical_batch:main", "fit B_crit(L) to the measured noise scales"),
    "commbench": ("harness.driver.commbench:main", "all-reduce / all-gather / reduce-scatter benchmark"),
    "validate": ("harness.analysis.validate_cmd:main", "replay published runs through the throughput law"),
    "extrapolate": ("harness.analysis.extrapolate_cmd:main", "extrapolate to a target cluster (colossus)"),
    "report": ("harness.analysis.report:main", "Markdown report with plots"),
    "pipeline": ("harness.commands.pipeline:main", "the main job: CPU sweep, fits, extrapolation, report"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: harness <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"harness: unknown command {name!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("harness"):
            print(
                f"harness: command {name!r} is not available in this build ({e.name} missing)",
                file=sys.stderr,
            )
            return 2
        raise
    return int(fn(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
