"""Per-size training rules: peak learning rate and global batch as functions of model size and compute.

A scaling-law sweep is only as good as each run's tuning: a rule that is right for one size and
wrong for another bends the fitted exponents. So every planned run takes its learning rate and
batch from one documented rule, and its record names the rule (``train.lr_rule``).

Rules (ids are what ``train.lr_rule`` records; a ``*m`` suffix marks an LR-sweep multiplier):

``deepseek-llm-2024`` (default). DeepSeek-AI, "DeepSeek LLM: Scaling Open-Source Language Models
    with Longtermism", arXiv:2401.02954, Sec. 3.1, eq. (1): near-optimal hyperparameters fitted
    as power laws of the compute budget,
        eta_opt = 0.3118 * C^-0.1250,   B_opt = 0.2920 * C^0.3271   (B in tokens),
    with C = M * D and M the non-embedding FLOPs per token, M = 72 n_layer d_model^2 +
    6 n_layer d_model l_seq (their Sec. 3.2). They fitted it on small runs of roughly 1e17-1e20
    FLOPs; a CPU plan at 1e11-1e13 extrapolates it by 5+ orders of magnitude (``--lr-sweep`` checks it).
``kaplan-2020``. Kaplan et al., "Scaling Laws for Neural Language Models", arXiv:2001.08361,
    App. D.6, eq. (D.1): LR(N) ~ 0.003239 - 0.0001395 ln N (N = non-embedding parameters). It
    sets the learning rate only; the batch is left to the caller (Kaplan trained at a fixed
    batch and modelled the batch with the critical batch, see analysis/critical_batch.py).

Schedule (every rule): linear warm-up over at most ``WARMUP_FRAC`` of the run's own steps, then
cosine decay to ``MIN_LR_RATIO`` of the peak over the run's own token budget. Hoffmann et al.
2022 (Chinchilla, arXiv:2203.15556, Sec. 3 and App. B) found that a cosine cycle longer than the
run leaves it under-trained, and decayed the LR by 10x; the trainer already decays over each
run's own steps, so matching the cycle to the budget needs only D = the run's tokens.

Pure Python: the planner imports this without torch. The best run of each LR sweep (what the loss
fit takes) is picked by ``harness.analysis.best_lr``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

from harness.core import flops

WARMUP_FRAC = 0.05  # warm-up is at most 5% of each run's steps
MIN_LR_RATIO = 0.1  # cosine to 10% of the peak (Hoffmann et al. 2022)
DEFAULT_RULE = "deepseek-llm-2024"


class RuleError(ValueError):
    """A rule name or an input the rule cannot use; the message names it and what is allowed."""


def deepseek_m(s: flops.Shape) -> float:
    """DeepSeek's non-embedding FLOPs per token M (arXiv:2401.02954, Sec. 3.2): attention's
    sequence term counted, the vocabulary projection not."""
    return 72.0 * s.n_layer * s.d_model**2 + 6.0 * s.n_layer * s.d_model * s.seq_len


def deepseek_lr(c: float) -> float:
    """eta_opt = 0.3118 C^-0.1250 (DeepSeek LLM 2024, eq. 1), C = M D in FLOPs."""
    return 0.3118 * c**-0.1250


def deepseek_batch_tokens(c: float) -> float:
    """B_opt = 0.2920 C^0.3271 tokens (DeepSeek LLM 2024, eq. 1), C = M D in FLOPs."""
    return 0.2920 * c**0.3271


def kaplan_lr(n_nonembedding: float) -> float:
    """LR(N) ~ 0.003239 - 0.0001395 ln N (Kaplan et al. 2020, eq. D.1); positive only below N ~ 1e10."""
    lr = 0.003239 - 0.0001395 * math.log(n_nonembedding)
    if lr <= 0:
        raise RuleError(
            f"kaplan-2020 gives LR {lr:.3g} <= 0 at N = {n_nonembedding:.3g} (the fit covers N up to "
            "~1e9); allowed: a smaller model, or rule deepseek-llm-2024"
        )
    return lr


@dataclass(frozen=True)
class Rule:
    id: str
    citation: str
    formula: str
    lr: Callable[[flops.Shape, float], float]  # (shape, tokens) -> peak LR
    batch_tokens: Callable[[flops.Shape, float], float] | None  # None: the caller's batch is kept


RULES: dict[str, Rule] = {
    "deepseek-llm-2024": Rule(
        id="deepseek-llm-2024",
        citation="DeepSeek-AI 2024, DeepSeek LLM, arXiv:2401.02954, Sec. 3.1 eq. (1)",
        formula="eta = 0.3118 C^-0.1250, B = 0.2920 C^0.3271 tokens, C = M D, M = 72 L d^2 + 6 L d T",
        lr=lambda s, d: deepseek_lr(deepseek_m(s) * d),
        batch_tokens=lambda s, d: deepseek_batch_tokens(deepseek_m(s) * d),
    ),
    "kaplan-2020": Rule(
        id="kaplan-2020",
        citation="Kaplan et al. 2020, Scaling Laws for Neural Language Models, arXiv:2001.08361, eq. (D.1)",
        formula="LR = 0.003239 - 0.0001395 ln N (N non-embedding); batch unchanged",
        lr=lambda s, d: kaplan_lr(flops.params_nonembedding(s)),
        batch_tokens=None,
    ),
}


def get(rule: str) -> Rule:
    if rule not in RULES:
        raise RuleError(f"unknown LR rule {rule!r}; allowed: {', '.join(RULES)}")
    return RULES[rule]


@dataclass(frozen=True)
class Settings:
    """What a rule sets for one run, as the trainer's config fields."""

    lr: float
    micro_batch: int
    grad_accum: int
    global_batch_seqs: int
    warmup_frac: float
    min_lr_ratio: float
    lr_rule: str  # "<rule>" or "<rule>*<multiplier>" for an LR-sweep point
    batch_tokens_rule: float | None  # the rule's batch before rounding to whole sequences

    def overrides(self) -> list[str]:
        return [
            f"train.lr={self.lr:.4g}",
            f"train.micro_batch={self.micro_batch}",
            f"train.grad_accum={self.grad_accum}",
            f"train.warmup_frac={self.warmup_frac:g}",
            f"train.min_lr_ratio={self.min_lr_ratio:g}",
            "train.schedule=cosine",
            f"train.lr_rule={self.lr_rule}",
        ]


def split_batch(global_seqs: int, world: int, max_micro: int) -> tuple[int, int, int]:
    """(micro_batch, grad_accum, global_seqs): global = micro x accum x world, at least one sequence per rank.

    The global batch is rounded to a multiple of the world size (every rank gets the same share)
    and the per-rank share is split into the fewest accumulation steps with micro <= max_micro;
    when the share does not divide evenly it is rounded to micro x accum (off by < accum seqs).
    """
    if world < 1 or max_micro < 1:
        raise RuleError(f"world={world}, max_micro={max_micro}; allowed: both >= 1")
    per_rank = max(1, round(global_seqs / world))
    accum = -(-per_rank // max_micro)
    micro = max(1, round(per_rank / accum))
    return micro, accum, micro * accum * world


def settings(
    rule: str,
    s: flops.Shape,
    tokens: float,
    *,
    world: int = 1,
    max_micro: int = 32,
    lr_multiplier: float = 1.0,
    default_batch_seqs: int | None = None,
) -> Settings:
    """The rule's LR and batch for one run of shape ``s`` trained on ``tokens`` tokens on ``world`` ranks.

    ``default_batch_seqs`` is the batch for rules that do not set one (kaplan-2020).
    """
    r = get(rule)
    if not (tokens > 0 and lr_multiplier > 0):
        raise RuleError(f"tokens={tokens}, lr_multiplier={lr_multiplier}; allowed: both > 0")
    if r.batch_tokens is not None:
        b_tok = r.batch_tokens(s, tokens)
        seqs = max(1, round(b_tok / s.seq_len))
    else:
        if default_batch_seqs is None:
            raise RuleError(f"rule {rule} sets no batch; give default_batch_seqs")
        b_tok, seqs = None, default_batch_seqs
    micro, accum, gseqs = split_batch(seqs, world, max_micro)
    tag = r.id if lr_multiplier == 1.0 else f"{r.id}*{lr_multiplier:g}"
    return Settings(
        lr=r.lr(s, tokens) * lr_multiplier,
        micro_batch=micro,
        grad_accum=accum,
        global_batch_seqs=gseqs,
        warmup_frac=WARMUP_FRAC,
        min_lr_ratio=MIN_LR_RATIO,
        lr_rule=tag,
        batch_tokens_rule=b_tok,
    )


def describe(rule: str) -> str:
    r = get(rule)
    return (
        f"{r.id}: {r.formula} ({r.citation}); warm-up <= {WARMUP_FRAC:.0%} of each run's steps, cosine to "
        f"{MIN_LR_RATIO:g} x peak over the run's own tokens (Hoffmann et al. 2022, arXiv:2203.15556)"
    )


# --------------------------------------------------------------------------- LR sweeps: the best run of each


def best_lr_main(argv: list[str]) -> int:
    """``python -m harness.driver.lr_rules RESULTS_DIR [--csv OUT] [--loss-column heldout_loss]``: write the
    per-size best-LR runs as a CSV that ``harness fit --csv OUT --columns N=N,D=D,loss=fit_loss`` fits."""
    import argparse

    from harness.analysis.best_lr import select_best_lr
    from harness.core.records import records_table

    p = argparse.ArgumentParser(prog="python -m harness.driver.lr_rules", description=best_lr_main.__doc__)
    p.add_argument("root")
    p.add_argument("--csv", default=None, help="output CSV (default <root>/best_lr.csv)")
    p.add_argument("--loss-column", default="heldout_loss")
    a = p.parse_args(argv)
    table = records_table(a.root)
    if table.empty:
        print(f"no completed training records under {a.root}", file=sys.stderr)
        return 2
    best = select_best_lr(table, a.loss_column)
    best["fit_loss"] = best[a.loss_column]
    out = a.csv or f"{a.root.rstrip('/')}/best_lr.csv"
    best.to_csv(out, index=False)
    edge = int(best["lr_at_edge"].sum())
    print(
        f"{len(table)} runs -> {len(best)} best-LR runs; {edge} at the edge of their LR sweep; wrote {out}\n"
        f"fit them with: harness fit --csv {out} --columns N=N,D=D,loss=fit_loss"
    )
    return 0


if __name__ == "__main__":
    sys.exit(best_lr_main(sys.argv[1:]))
