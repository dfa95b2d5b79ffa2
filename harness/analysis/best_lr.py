"""The best run of each learning-rate sweep: what the loss-law fit takes from an LR sweep.

A planned LR sweep runs every (size, budget) at several multiples of its rule's learning rate;
the record's ``train.lr_rule`` names the rule and the multiple (``deepseek-llm-2024*0.5``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MANUAL = "manual"  # the lr_rule of a run whose learning rate was set by hand


class BestLrError(ValueError):
    """A table the best-LR selection cannot use; the message names the missing columns."""


def rule_multiplier(tag: object) -> tuple[str, float]:
    """'deepseek-llm-2024*0.5' -> ('deepseek-llm-2024', 0.5); plain ids -> (id, 1.0)."""
    text = str(tag) if tag is not None and tag == tag else MANUAL  # NaN-safe
    base, star, mult = text.partition("*")
    try:
        return base, float(mult) if star else 1.0
    except ValueError:
        return text, 1.0


def select_best_lr(
    df: pd.DataFrame, loss_col: str = "heldout_loss", keys: tuple[str, ...] = ("N", "D")
) -> pd.DataFrame:
    """Per size and budget, keep the run of an LR sweep with the lowest loss (the loss fit's input).

    Rows that share ``keys`` and the base rule (``lr_rule`` without its ``*m`` suffix) are one LR
    sweep; the best is kept and annotated with ``lr_candidates``, ``lr_multiplier`` and
    ``lr_at_edge`` (the best LR is the smallest or the largest tried: the sweep did not bracket
    the optimum, so the kept loss is an upper bound). Runs without ``lr_rule`` count as manual.
    """
    import pandas as pd

    if df.empty:
        return df.assign(lr_candidates=[], lr_multiplier=[], lr_at_edge=[])
    missing = [c for c in (*keys, loss_col) if c not in df.columns]
    if missing:
        raise BestLrError(
            f"select_best_lr: column(s) {missing} not in the table; columns found: {list(df.columns)}"
        )
    d = df.copy()
    tags = d["lr_rule"] if "lr_rule" in d.columns else pd.Series([MANUAL] * len(d), index=d.index)
    parsed = [rule_multiplier(t) for t in tags]
    d["_base"] = [b for b, _ in parsed]
    d["lr_multiplier"] = [m for _, m in parsed]
    d = d[pd.to_numeric(d[loss_col], errors="coerce").notna()]
    out = []
    for _, g in d.groupby([*keys, "_base"], sort=True, dropna=False):
        best = g.loc[g[loss_col].astype(float).idxmin()].copy()
        mults = sorted(set(g["lr_multiplier"]))
        best["lr_candidates"] = len(g)
        best["lr_at_edge"] = len(mults) > 1 and best["lr_multiplier"] in (mults[0], mults[-1])
        out.append(best)
    return pd.DataFrame(out).drop(columns="_base").reset_index(drop=True)
