"""Config composition and validation: every bad value stops early with one clear message."""

import subprocess
import sys

import pytest

from harness.core import config as C
from harness.core import shapes
from harness.driver import preflight
from harness.worker import hardware


def composed(*overrides):
    cfg = C.compose(list(overrides))
    C.validate(cfg)
    preflight.check(cfg)
    return cfg


def test_default_composes_and_validates():
    cfg = composed()
    assert cfg.model.name == "gpt-0.8m" and cfg.cluster.name == "cpu" and cfg.engine.name == "ddp"
    assert C.global_batch(cfg) == cfg.train.micro_batch


def test_model_ladder_spans_smoke_to_gpt3_175b():
    from harness.core import flops

    sizes = {}
    for name in C.available("model"):
        cfg = C.compose([f"model={name}"])
        sizes[name] = flops.params_nonembedding(shapes.of_config(cfg))
    assert 0.08e6 < sizes["gpt-0.1m"] < 0.12e6
    assert sizes["gpt3-175b"] > 170e9
    assert C.compose(["model=gpt3-175b"]).model.plan_only


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model=nope"], "Could not find 'model/nope'"),
        (["train.micro_batch=abc"], "could not be converted to Integer"),
        (["train.mirco_batch=4"], "train.mirco_batch"),
        (
            ["nproc=2", "train.global_batch=10"],
            "train.global_batch=10 is not micro_batch x grad_accum x world_size",
        ),
        (["train.dtype=fp8"], "train.dtype='fp8' is not allowed: one of fp32, bf16, fp16"),
        (["engine.zero_stage=2"], "engine.zero_stage=2 is not allowed"),
        (["model=gpt3-175b"], "planning-only shape"),
        (["cluster=h100-node"], "needs CUDA devices"),
        (["model.n_head=3"], "model.d_model=128 is not allowed: must be divisible by model.n_head=3"),
        (["train.tokens=0"], "train.tokens=0 is not allowed"),
        (["train.schedule=step"], "train.schedule='step'"),
        (["data.heldout_frac=0.9"], "data.heldout_frac=0.9"),
    ],
)
def test_invalid_values_are_named(overrides, needle):
    with pytest.raises(C.ConfigError) as e:
        composed(*overrides)
    assert needle in str(e.value)


def test_global_batch_divisibility_ok_when_consistent():
    cfg = composed("nproc=2", "train.micro_batch=4", "train.grad_accum=2", "train.global_batch=16")
    assert C.global_batch(cfg) == 16


def test_bf16_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(
        C.ConfigError, match=r"train.dtype='bf16' is not allowed: this cpu has no native bf16.*fp32"
    ):
        composed("train.dtype=bf16")


def test_bf16_allowed_on_a_cpu_with_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert composed("train.dtype=bf16").train.dtype == "bf16"


def test_cli_bad_override_is_one_message_no_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "train", "model=nope"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "Could not find 'model/nope'" in out.stderr and "Traceback" not in out.stderr


def test_cli_unknown_command():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "trian"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr


def test_dry_run_prints_torchrun_and_starts_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "train", "--dry-run", "nproc=2", f"results_dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "torch.distributed.run" in out.stdout and "--nproc-per-node 2" in out.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ["launcher=deepspeed", "launcher.ds_launcher=ssh"],
            "launcher.ds_launcher='ssh' is not allowed: one of pdsh",
        ),
        (["launcher.timeout_s=-1"], "launcher.timeout_s=-1.0 is not allowed"),
        (["launcher.name=multinode"], "launcher.name='multinode' is not allowed: 'local' (launcher=local)"),
        (["launcher=local", "launcher.hostfile=h"], "unknown key 'launcher.hostfile'"),
    ],
)
def test_each_launcher_has_its_own_schema_and_rules(overrides, needle):
    with pytest.raises(C.ConfigError) as e:
        composed(*overrides)
    assert needle in str(e.value)


def test_every_primary_config_composes_onto_its_schema():
    from omegaconf import OmegaConf

    from harness.core.config_jobs import ROOTS, validate_commbench, validate_extrapolate

    for name, schema in ROOTS.items():
        assert OmegaConf.get_type(C.compose([], name)) is schema
    validate_extrapolate(C.compose([], "extrapolate"))
    validate_commbench(C.compose([], "commbench"))
    with pytest.raises(C.ConfigError, match="gpus=0 is not allowed"):
        validate_extrapolate(C.compose(["gpus=0"], "extrapolate"))
    with pytest.raises(C.ConfigError, match="factor=1 is not allowed"):
        validate_commbench(C.compose(["factor=1"], "commbench"))
