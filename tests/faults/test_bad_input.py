"""Property-based: any invalid value given on the command line ends in one clear ConfigError
naming it, never a traceback from deep inside Hydra, torch or DeepSpeed; and any Hydra override
syntax given to ``harness train`` or ``harness extrapolate`` ends in exit 0 or in exit 2 with
one line on stderr."""

import contextlib
import io
import subprocess
import sys
import tempfile
from dataclasses import fields
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.analysis import extrapolate_run
from harness.cli import main as cli_main
from harness.core import config as C
from harness.core.config_jobs import ExtrapolateConfig

INT_KEYS = [
    "nproc",
    "nnodes",
    "train.micro_batch",
    "train.grad_accum",
    "train.seq_len",
    "train.tokens",
    "train.eval_tokens",
    "train.log_interval",
    "model.n_layer",
    "model.n_head",
    "model.d_model",
    "train.keep_checkpoints",
]
FLOAT_KEYS = [
    "train.lr",
    "train.warmup_frac",
    "train.min_lr_ratio",
    "train.grad_clip",
    "data.heldout_frac",
    "model.dropout",
]
CHOICE_KEYS = {
    "train.dtype": C.DTYPES,
    "train.schedule": C.SCHEDULES,
    "engine.name": C.ENGINES,
    "cluster.device": C.DEVICES,
}
GROUPS = ["model", "cluster", "engine", "launcher", "sweep"]

junk = st.text(alphabet="abcxyz-_!%", min_size=1, max_size=8)

invalid_override = st.one_of(
    st.tuples(st.sampled_from(INT_KEYS), st.integers(max_value=0).map(str)),
    st.tuples(st.sampled_from(INT_KEYS), junk),
    st.tuples(st.sampled_from(FLOAT_KEYS), st.floats(min_value=-1e6, max_value=-1e-9).map(repr)),
    st.tuples(st.sampled_from(FLOAT_KEYS), st.sampled_from(["nan", "inf", "-inf"])),
    st.tuples(st.sampled_from(list(CHOICE_KEYS)), junk),
    st.tuples(st.sampled_from(GROUPS), junk),
    st.tuples(st.sampled_from(["train", "model", "data"]).map(lambda g: f"{g}.no_such_key"), st.just("1")),
)


def check(key: str, value: str) -> None:
    try:
        cfg = C.compose([f"{key}={value}"])
        C.validate(cfg)
    except C.ConfigError as e:
        msg = str(e)
        assert msg and "Traceback" not in msg
        # The message names the offending key (or its group) or the value.
        assert key.split(".")[-1] in msg or value in msg or key.split(".")[0] in msg, msg
        return
    # Some "invalid-looking" values are valid (e.g. nproc=0 fails, but dropout=-0.0 ...): must then validate.
    raise AssertionError(f"{key}={value} was accepted")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(invalid_override)
def test_every_invalid_override_is_one_clear_error(kv):
    check(*kv)


@settings(max_examples=40, deadline=None)
@given(micro=st.integers(1, 16), accum=st.integers(1, 4), nproc=st.integers(1, 4), gb=st.integers(1, 256))
def test_global_batch_rule(micro, accum, nproc, gb):
    cfg = C.compose(
        [
            f"train.micro_batch={micro}",
            f"train.grad_accum={accum}",
            f"nproc={nproc}",
            f"train.global_batch={gb}",
        ]
    )
    if gb == micro * accum * nproc:
        C.validate(cfg)
    else:
        try:
            C.validate(cfg)
        except C.ConfigError as e:
            assert f"train.global_batch={gb}" in str(e) and str(micro * accum * nproc) in str(e)
        else:
            raise AssertionError("inconsistent global batch accepted")


def test_cli_bad_input_exit_codes():
    for args in (["train", "train.dtype=fp7"], ["sweep", "sweep=nope"], ["sweep"], ["train", "nproc=0"]):
        out = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.strip(), args


def test_missing_data_source_is_clear(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "train",
            f"data.source={tmp_path / 'nope'}",
            f"results_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert (
        out.returncode == 2 and "is not a prepared token dir" in out.stderr and "Traceback" not in out.stderr
    )


# --------------------------------------------------------------------------- Hydra syntax on the command line

RESULTS = tempfile.mkdtemp(prefix="harness-bad-input-")
TRAIN_KEYS = [
    *INT_KEYS,
    *FLOAT_KEYS,
    *CHOICE_KEYS,
    "train",
    "model.name",
    "launcher.hostfile",
    "nope",
    "train.nope",
]
EXTRAPOLATE_KEYS = [f.name for f in fields(ExtrapolateConfig)] + [
    "bogus",
    "cluster.num_nodes",
    "model.n_layer",
]
HYDRA_KEYS = ["hydra", "hydra.run.dir", "hydra/launcher", "hydra.job.chdir"]
# Hydra's override grammar: sweeps, lists, dicts, quoting, interpolations, functions, and junk.
hydra_value = st.one_of(
    st.text(alphabet="abc019,.=[]{}()'\"$:+-~@*/\\ _%", max_size=12),
    st.sampled_from(
        ["a,b", "1,2", "[1,2]", "[]", "range(1,3)", "glob(*)", "interval(0,1)", "choice(a,b)", "${oc.env:NOPE}",
         "${nope}", "${train.lr}", "null", "{a:1}", "'q'", "\"q\"", "inf", "nan", "-1", "0", "1e3", "", "\\"]
    ),
)  # fmt: skip


def hydra_override(keys: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda prefix, key, package, eq, value: f"{prefix}{key}{package}{eq}{value}",
        st.sampled_from(["", "", "+", "++", "~"]),
        st.sampled_from([*keys, *GROUPS, *HYDRA_KEYS]),
        st.sampled_from(["", "", "", "@pkg"]),
        st.sampled_from(["=", "=", "=", ""]),
        hydra_value,
    )


def one_run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(argv)  # an exception escaping here is the traceback a user would see
    return rc, err.getvalue()


def assert_clean(argv: list[str], rc: int, err: str) -> None:
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hydra_override(TRAIN_KEYS), min_size=1, max_size=3))
def test_train_takes_any_hydra_syntax_without_a_traceback(overrides):
    argv = ["train", "--dry-run", f"results_dir={RESULTS}", *overrides]
    assert_clean(argv, *one_run(argv))


class Built(Exception):
    """Validation passed and the extrapolation would start: the command line was accepted."""


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hydra_override(EXTRAPOLATE_KEYS), min_size=1, max_size=3))
def test_extrapolate_takes_any_hydra_syntax_without_a_traceback(overrides):
    argv = ["extrapolate", *overrides]
    with mock.patch.object(extrapolate_run, "build", side_effect=Built):
        try:
            rc, err = one_run(argv)
        except Built:
            return
    assert_clean(argv, rc, err)
