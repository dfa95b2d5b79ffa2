"""One training run on every rank: ``python -m harness.worker.train RUN_DIR`` under torchrun.

- ``run``: the process (frozen config in, run record out; failures and pre-emption recorded)
- ``loop``: the training loop, top to bottom: setup, steps, checkpoints / pre-emption, finish
- ``step``: one optimizer step (micro-batches, comm timing, the noise-scale inputs)
- ``steplog``: the log boundary, where ranks agree on losses, stop requests and checkpoints
- ``evaluation``: held-out loss; ``state``: what the loop carries and checkpoints
- ``sinks``: where per-step metrics go (metrics.jsonl, wandb); ``summary``: the record's measurements
"""
