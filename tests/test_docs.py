"""The docs name only paths that exist: README, CONTRIBUTING and the folder READMEs follow the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "CONTRIBUTING.md", "launch/README.md", "results/README.md"]
TOP = ("harness/", "configs/", "benchmarks/", "tests/", "launch/", ".ci/")
# `harness/core/flops.py`, `tests/test_layers.py`, `configs/cluster/` ...; not templates like <run_id>.
PATH = re.compile(r"`((?:" + "|".join(re.escape(t) for t in TOP) + r")[A-Za-z0-9_./-]*)`")


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_doc_names_exists(doc):
    text = (ROOT / doc).read_text()
    missing = [p for p in PATH.findall(text) if not (ROOT / p.rstrip("/")).exists()]
    assert missing == [], f"{doc} names paths that do not exist: {missing}"
