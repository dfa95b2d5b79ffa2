"""Data: prepared token dirs, held-out split, per-rank sharding, determinism."""

import json

import numpy as np
import pytest

from harness import datasets as D
from harness.datasets.build import _is_heldout


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(200):
        (src / f"doc{i:03d}.txt").write_bytes(bytes(rng.integers(32, 127, size=500, dtype=np.uint8)))
    return src


def test_prepare_splits_by_document_and_is_reproducible(corpus, tmp_path):
    meta = D.prepare([corpus], tmp_path / "a", heldout_frac=0.1)
    meta2 = D.prepare([corpus], tmp_path / "b", heldout_frac=0.1)
    assert meta == meta2
    assert (
        5 <= meta["n_heldout_documents"] <= 40
        and meta["n_train_documents"] + meta["n_heldout_documents"] == 200
    )
    td = D.TokenData.open(tmp_path / "a")
    assert len(td.train) == meta["n_train_tokens"] and len(td.heldout) == meta["n_heldout_tokens"]
    # Held-out documents never appear in the train stream.
    heldout_docs = [p.read_bytes() for p in sorted(corpus.iterdir()) if _is_heldout(p.name, 0.1)]
    train_bytes = bytes(td.train)
    assert heldout_docs and not any(doc in train_bytes for doc in heldout_docs)


def test_prepare_data_cli_and_use_in_training(corpus, tmp_path, run_train):
    from harness.cli import main

    assert main(["prepare-data", str(corpus), "--out", str(tmp_path / "tok")]) == 0
    assert json.loads((tmp_path / "tok" / "meta.json").read_text())["vocab_size"] == 256
    out = run_train(f"data.source={tmp_path / 'tok'}", "train.tokens=2048")
    assert out.status == "completed", out.record.get("failure")


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    from harness.cli import main

    assert main(["prepare-data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    with pytest.raises(D.DataError, match="not a prepared token dir"):
        D.resolve_source(str(tmp_path))


def test_sampler_shards_global_batch_across_ranks_and_is_seeded():
    tokens = np.arange(10_000, dtype=np.uint16) % 251
    s = D.BatchSampler(tokens, seq_len=16, seed=1)
    whole = s.get(s.sample_ids(step=3, global_batch=8, rank=0, per_rank=8))
    halves = [s.get(s.sample_ids(step=3, global_batch=8, rank=r, per_rank=4)) for r in range(2)]
    np.testing.assert_array_equal(whole, np.concatenate(halves))
    assert not np.array_equal(halves[0], halves[1])
    again = D.BatchSampler(tokens, seq_len=16, seed=1).get(range(24, 32))
    np.testing.assert_array_equal(whole, again)
    other_seed = D.BatchSampler(tokens, seq_len=16, seed=2).get(range(24, 32))
    assert not np.array_equal(whole, other_seed)


def test_sampler_visits_every_window_once_per_epoch():
    s = D.BatchSampler(np.arange(1 + 16 * 50, dtype=np.uint16), seq_len=16, seed=0)
    firsts = s.get(range(50))[:, 0]
    assert sorted(firsts.tolist()) == [16 * i for i in range(50)]


def test_embedded_corpus_is_the_stdlib():
    root, files = D.embedded_corpus_files()
    assert any(f.name == "os.py" for f in files)
    d = D.embedded_dir()
    meta = json.loads((d / "meta.json").read_text())
    assert meta["n_train_tokens"] > 10_000_000 and meta["n_heldout_tokens"] > 100_000
