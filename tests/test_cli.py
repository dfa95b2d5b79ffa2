"""The command line: one idiom for the commands that compose a config, and the top-level entry.

Every refusal is exit 2 with one line on stderr that names the offending key or flag, never a
traceback; ``--cfg job`` prints the composed config; ``--help`` is generated from the schema.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from harness.cli import main
from harness.core import compose as K
from harness.core import config as C
from harness.core.config_jobs import ROOTS, CommbenchConfig, ExtrapolateConfig

# Enough for each command to compose (plan needs its budgets).
BASE = {
    "train": [],
    "sweep": ["sweep=smoke"],
    "plan": ["--budgets", "1e12"],
    "extrapolate": [],
    "commbench": [],
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    rc, _, err = run(capsys, *argv)
    assert rc == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"harness {argv[0]}: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("command", list(BASE))
@pytest.mark.parametrize(
    "override, needles",
    [
        ("+foo=1", ["unknown key 'foo'"]),
        ("++bar.baz=2", ["'bar"]),
        ("hydra/launcher=submitit_slurm", ["hydra/launcher=submitit_slurm", "hydra"]),
        ("hydra.run.dir=/tmp/x", ["hydra.run.dir", "refused"]),
        ("hydra.job.chdir=true", ["hydra.job.chdir"]),
    ],
)
def test_unknown_keys_and_hydra_settings_are_refused_by_every_command(capsys, command, override, needles):
    refused(capsys, [command, *BASE[command], override], *needles)


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["train", "+train.lrr=1"], ["train.lrr", "did you mean 'train.lr'"]),
        (["train", "train.mirco_batch=4"], ["train.mirco_batch", "train.micro_batch"]),
        (["train", "launcher.rdzv_endpoint=node0:29400"], ["launcher.rdzv_endpoint", "launcher=multinode"]),
        (["train", "model=a,b"], ["model=a,b", "harness sweep"]),
        (["train", "nproc=range(1,3)"], ["nproc=range(1,3)", "harness sweep"]),
        (["train", "model=[gpt-0.1m,gpt-0.3m]"], ["model=", "one preset"]),
        (["train", "+sweep=smoke"], ["+sweep=smoke"]),
        (["train", "model@train=gpt-0.1m"], ["package"]),
        (["train", "model=nope"], ["Could not find 'model/nope'", "allowed: gpt-0.03m"]),
        (["train", "train.micro_batch=abc"], ["train.micro_batch", "Integer"]),
        (["train", "nproc=${oc.env:HARNESS_NO_SUCH_VAR}"], ["nproc", "HARNESS_NO_SUCH_VAR"]),
        (["train", "nproc"], ["'nproc'", "KEY=VALUE"]),
        (["train", "=3"], ["'=3'"]),
        (["train", "--timeout", "soon"], ["--timeout", "soon"]),
        (["train", "--bogus"], ["--bogus"]),
        (["train", "--cfg", "hydra"], ["--cfg"]),
        (["train", "launcher.name=slurm"], ["launcher.name", "launcher=<name>"]),
        (["extrapolate", "bogus=1"], ["bogus"]),
        (["extrapolate", "days=ninety"], ["days", "ninety"]),
        (["extrapolate", "cluster=nowhere"], ["not a preset", "colossus"]),
        (["extrapolate", "cluster.num_nodes=10"], ["cluster.num_nodes", "cluster=<preset>"]),
        (["extrapolate", "--loss-law", "magic"], ["--loss-law", "magic"]),
        (["sweep"], ["sweep=<name>", "smoke"]),
        (["sweep", "sweep=nope"], ["sweep/nope"]),
        (["sweep", "sweep=smoke", "model=a,b"], ["model=a,b", "harness sweep"]),
        (["plan", "--budgets", "lots"], ["--budgets", "lots"]),
        (["plan"], ["plan.budgets"]),
        (["plan", "--budgets", "1e12", "plan.sizez=7"], ["plan.sizez", "plan.sizes"]),
        (["commbench", "--max-bytes", "3Q"], ["--max-bytes", "3Q"]),
        (["commbench", "ops=[all_reduce,gossip]"], ["ops", "gossip"]),
    ],
)
def test_each_refusal_is_one_line_naming_it(capsys, argv, needles):
    refused(capsys, argv, *needles)


@pytest.mark.parametrize("flag", ["--multirun", "-m"])
@pytest.mark.parametrize("command", ["train", "extrapolate", "commbench", "plan"])
def test_multirun_is_refused_with_a_pointer_to_sweep(capsys, command, flag):
    refused(capsys, [command, flag, "nproc=1,2"], flag, "harness sweep")


def test_a_bad_override_in_a_real_process_has_no_traceback():
    for argv in (
        ["train", "+foo=1"],
        ["train", "hydra/launcher=submitit_slurm"],
        ["extrapolate", "model=a,b"],
    ):
        out = subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# --------------------------------------------------------------------------- --cfg job


def test_cfg_job_prints_the_composed_config_with_flags_as_keys(capsys):
    rc, out, _ = run(capsys, "train", "--cfg", "job", "--timeout", "5", "nproc=2", "launcher=multinode")
    cfg = yaml.safe_load(out)
    assert rc == 0 and cfg["nproc"] == 2 and cfg["launcher"]["timeout_s"] == 5.0
    assert cfg["launcher"]["name"] == "multinode" and "rdzv_endpoint" in cfg["launcher"]
    assert cfg["model"]["name"] == "gpt-0.8m" and cfg["train"]["lr"] == 0.001

    rc, out, _ = run(
        capsys, "extrapolate", "cluster=colossus", "days=30", "gpus=1024", "--out", "/tmp/a b", "--cfg", "job"
    )
    cfg = yaml.safe_load(out)
    assert rc == 0 and cfg["days"] == 30.0 and cfg["gpus"] == 1024 and cfg["out"] == "/tmp/a b"
    assert cfg["cluster"]["name"] == "colossus" and cfg["model"]["name"] == "gpt3-175b"

    rc, out, _ = run(
        capsys, "commbench", "--world-sizes", "2,4", "--max-bytes", "1M", "--quiet", "--cfg", "job"
    )
    cfg = yaml.safe_load(out)
    assert rc == 0 and cfg["world_sizes"] == [2, 4] and cfg["max_bytes"] == 1 << 20 and cfg["quiet"] is True

    rc, out, _ = run(capsys, "plan", "--budgets", "1e12,3e12", "--sizes", "7", "--nproc", "2", "--cfg", "job")
    cfg = yaml.safe_load(out)
    assert (
        rc == 0 and cfg["plan"]["budgets"] == [1e12, 3e12] and cfg["plan"]["sizes"] == 7 and cfg["nproc"] == 2
    )

    rc, out, _ = run(capsys, "sweep", "sweep=smoke", "sweep.parallel=3", "results_dir=/tmp/r", "--cfg", "job")
    cfg = yaml.safe_load(out)
    assert rc == 0 and cfg["sweep"]["name"] == "smoke" and cfg["sweep"]["parallel"] == 3
    assert cfg["results_dir"] == "/tmp/r" and cfg["train"]["seq_len"] == 64  # the preset's own overrides


def test_the_readme_forms_of_extrapolate_still_compose(capsys):
    for argv in (["cluster=colossus"], ["model=gpt3-175b"], ["cluster=colossus", "days=90", "gpus=1024"]):
        rc, out, err = run(capsys, "extrapolate", *argv, "--cfg", "job")
        assert rc == 0, err
        assert yaml.safe_load(out)["cluster"]["name"] == "colossus"


# --------------------------------------------------------------------------- --help


@pytest.mark.parametrize("command", list(BASE))
def test_help_lists_groups_options_and_every_key_with_type_and_default(capsys, command):
    rc, out, _ = run(capsys, command, "--help")
    assert rc == 0 and out.startswith(f"usage: harness {command}")
    config = {"sweep": "config", "train": "config"}.get(command, command)
    for group in K.groups(config):
        assert f"  {group} " in out
        for option in C.available(group):
            assert option in out
    fixed = ("cluster", "model") if command == "extrapolate" else ()
    lines = {
        ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and ln.split()[0].endswith(":")
    }
    for key, hint, _ in K.walk(ROOTS[config]):
        if dataclasses.is_dataclass(hint) or key.split(".")[0] in fixed or key == "launcher":
            continue  # sections, presets used whole, and the launcher (its keys are its option's)
        assert f"{key}:" in lines, key
        assert f" {K.type_name(hint)} = " in lines[f"{key}:"], lines[f"{key}:"]


def test_help_shows_the_composed_defaults_and_each_launchers_keys(capsys):
    _, out, _ = run(capsys, "train", "--help")
    flat = " ".join(out.split())
    assert "train.lr: float = 0.001" in flat and "nproc: int = 1" in flat
    assert "model.name: str = gpt-0.8m" in flat and "[gpt-0.8m]" in flat and "[local]" in flat
    assert "with launcher=slurm, also:" in flat and "launcher.partition: str | None = null" in flat
    assert "--dry-run" in flat and "--timeout S" in flat and "(sets launcher.timeout_s)" in flat
    _, out, _ = run(capsys, "extrapolate", "--help")
    flat = " ".join(out.split())
    assert "days: float = 90.0" in flat and "gpus: int | None = null" in flat and "[colossus]" in flat
    for f in dataclasses.fields(ExtrapolateConfig):
        assert f"{f.name}" in flat
    _, out, _ = run(capsys, "commbench", "--help")
    flat = " ".join(out.split())
    assert "world_sizes: list[int] | None = null" in flat and "--world-sizes N,..." in flat
    assert all(f.name in flat for f in dataclasses.fields(CommbenchConfig))


# --------------------------------------------------------------------------- the typed config


def test_each_launcher_option_composes_to_its_own_schema():
    from omegaconf import OmegaConf

    for name, schema in C.LAUNCHERS.items():
        cfg = C.compose([f"launcher={name}"])
        assert OmegaConf.get_type(cfg.launcher) is schema and cfg.launcher.name == name
        assert set(cfg.launcher) == {f.name for f in dataclasses.fields(schema)}
    cfg = C.compose(["launcher=slurm", "+launcher.additional_parameters.constraint=h100"])
    assert cfg.launcher.additional_parameters == {"constraint": "h100"}
    with pytest.raises(C.ConfigError, match="launcher.hostfile"):
        C.compose(["launcher=multinode", "launcher.hostfile=hosts"])


def test_a_stored_config_of_any_launcher_merges_back_onto_the_schema():
    from omegaconf import OmegaConf

    stored = C.to_container(C.compose(["launcher=deepspeed"]))
    merged = OmegaConf.merge(OmegaConf.structured(C.HarnessConfig), stored)
    assert merged.launcher.hostfile == "" and merged.launcher.name == "deepspeed"


# --------------------------------------------------------------------------- the entry point


def test_version_bare_and_help():
    from harness.cli import version

    out = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"harness {version()}" and version()
    out = subprocess.run([sys.executable, "-m", "harness.cli"], capture_output=True, text=True)
    assert (
        out.returncode == 2 and out.stdout == "" and "usage: harness" in out.stderr and "train" in out.stderr
    )
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: harness" in out.stdout


def test_version_falls_back_to_the_package_attribute(monkeypatch):
    import importlib.metadata

    import harness
    from harness.cli import version

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert version() == harness.__version__
