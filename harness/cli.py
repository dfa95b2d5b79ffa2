"""``harness <command> [args]``: one entry point, each command in its own module.

The commands that compose a config (train, sweep, plan, commbench, extrapolate) share one
front end (``harness.commands._hydra``): Hydra overrides (``key=value``, ``group=option``)
plus their flags, ``--cfg job`` and a ``--help`` generated from the typed config. The
analysis commands take ordinary flags. Modules are imported lazily so ``harness fit`` never
pays for torch. ``harness`` alone prints the usage to stderr and exits 2.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> one line of help; the command lives in harness/commands/<name with _>.py as main(argv) -> int.
COMMANDS: dict[str, str] = {
    "train": "one data-parallel training run (Hydra overrides)",
    "sweep": "run a sweep of runs, skipping completed ones",
    "plan": "plan an IsoFLOP sweep around a prior law's optimum",
    "commbench": "all-reduce / all-gather / reduce-scatter benchmark",
    "extrapolate": "the plan for a target cluster (colossus)",
    "prepare-data": "text files -> memory-mapped token dir",
    "fit": "fit loss laws to run records or a CSV",
    "compare-fits": "the same loss law fitted to several sweeps, side by side",
    "critical-batch": "fit B_crit(L) to the measured noise scales",
    "validate": "replay published runs through the throughput law",
    "report": "Markdown report with plots",
    "pipeline": "the main job: CPU sweep, fits, extrapolation, report",
}


def version() -> str:
    """The installed package's version, else the source tree's ``harness.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("harness")
    except PackageNotFoundError:
        import harness

        return harness.__version__


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: harness [--version] [--help] <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, doc in COMMANDS.items()]
    lines += ["", "harness <command> --help describes one (its flags; for the first five, its config)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"harness {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"harness: unknown command {name!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        fn = importlib.import_module(f"harness.commands.{name.replace('-', '_')}").main
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("harness"):
            print(
                f"harness: command {name!r} is not available in this build ({e.name} missing)",
                file=sys.stderr,
            )
            return 2
        raise
    try:
        return int(fn(rest) or 0)
    except BrokenPipeError:  # the reader went away (harness train --help | head): quiet, like SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
