"""Throughput law: communication volumes, memory formulas, hard limits, layout search, fits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from harness.analysis import throughput as T
from harness.analysis.throughput import measured, usl
from harness.analysis.throughput.layout import Layout, activation_bytes_per_layer, check, memory_per_gpu
from harness.core import collectives, flops, hardware_specs

GPT3 = flops.Shape(n_layer=96, d_model=12288, n_head=96, vocab_size=50257, seq_len=2048)
SMALL = flops.Shape(n_layer=12, d_model=768, n_head=12, vocab_size=50257, seq_len=1024)
H100 = hardware_specs.get("H100-SXM")
C = T.Coefficients(e_mm=0.7, mem_bytes=500.0)


# --------------------------------------------------------------------------- communication volumes


def test_dp_allreduce_inside_one_node_is_one_nvlink_ring():
    lay = Layout(dp=8, grad_bytes=2)
    grads = T.params_per_gpu(SMALL, lay) * 2
    expect = collectives.collective_time(
        "all_reduce", grads, 8, H100.intra_alpha, H100.intra_bw * C.intra_bw_eff
    )
    assert T.dp_comm_time(SMALL, lay, H100, C) == pytest.approx(expect)


def test_dp_group_one_member_per_node_sees_one_nic():
    # TP8 fills each node, so the 16 DP replicas sit one per node: the NIC bandwidth of one GPU.
    lay = Layout(tp=8, dp=16, grad_bytes=2)
    grads = T.params_per_gpu(GPT3, lay) * 2
    nic = H100.inter_bw * C.inter_bw_eff * H100.nic_effective_fraction
    expect = collectives.collective_time("all_reduce", grads, 16, H100.inter_alpha, nic)
    assert T.dp_comm_time(GPT3, lay, H100, C) == pytest.approx(expect)


def test_dp_group_spanning_nodes_is_hierarchical():
    # 16 replicas, 8 per node: the op over 8 on NVLink, then the 1/8 shard over 2 nodes on the NICs.
    lay = Layout(dp=16, grad_bytes=2)
    grads = T.params_per_gpu(SMALL, lay) * 2
    intra = collectives.collective_time(
        "all_reduce", grads, 8, H100.intra_alpha, H100.intra_bw * C.intra_bw_eff
    )
    inter = collectives.collective_time(
        "all_reduce",
        grads / 8,
        2,
        H100.inter_alpha,
        H100.inter_bw * C.inter_bw_eff * H100.nic_effective_fraction,
    )
    assert T.dp_comm_time(SMALL, lay, H100, C) == pytest.approx(intra + inter)
    flat = T.dp_comm_time(SMALL, replace(lay, dp_collective="flat"), H100, C)
    assert flat > 2 * (intra + inter)  # every byte through one NIC per GPU


def test_zero3_moves_one_and_a_half_times_the_allreduce_bytes():
    hw = replace(H100, intra_alpha=0.0)  # bandwidth terms only
    z0 = T.dp_comm_time(SMALL, Layout(dp=8, grad_bytes=2), hw, C)
    z3 = T.dp_comm_time(SMALL, Layout(dp=8, zero_stage=3, grad_bytes=2), hw, C)
    assert z3 / z0 == pytest.approx(1.5)
    # A recomputed forward gathers the parameters once more: 2x.
    z3f = T.dp_comm_time(SMALL, Layout(dp=8, zero_stage=3, grad_bytes=2, recompute="full"), hw, C)
    assert z3f / z0 == pytest.approx(2.0)


def test_tp_is_four_allreduces_of_bsh_per_layer_and_microbatch():
    lay = Layout(tp=8, pp=4, dp=1, micro_batch=2, num_micro_batches=8)
    size = 2 * GPT3.seq_len * GPT3.d_model * 2  # b*s*h bf16
    one = collectives.collective_time("all_reduce", size, 8, H100.intra_alpha, H100.intra_bw * C.intra_bw_eff)
    assert T.tp_comm_time(GPT3, lay, H100, C) == pytest.approx(8 * (96 / 4) * 4 * one)
    full = T.tp_comm_time(GPT3, replace(lay, recompute="full"), H100, C)
    assert full == pytest.approx(8 * 24 * 6 * one)  # the recomputed forward repeats its two


def test_pp_sends_bsh_over_t_per_microbatch_and_direction():
    lay = Layout(tp=8, pp=4, dp=1, micro_batch=1, num_micro_batches=16, virtual_stages=2)
    size = GPT3.seq_len * GPT3.d_model * 2 / 8
    one = H100.inter_alpha + size / (H100.inter_bw * C.inter_bw_eff * H100.nic_effective_fraction)
    assert T.pp_comm_time(GPT3, lay, H100, C) == pytest.approx(16 * 2 * 2 * one)


def test_model_flops_come_from_harness_flops_and_recompute_adds_hardware_flops():
    f = flops.flops_per_token(GPT3)
    assert flops.hardware_flops_per_token(GPT3, "none") == f
    head = 6 * GPT3.d_model * GPT3.vocab_size
    assert flops.hardware_flops_per_token(GPT3, "full") == pytest.approx(f + (f - head) / 3)
    assert flops.hardware_flops_per_token(GPT3, "selective") == pytest.approx(f + 4 * 96 * 12288 * 2048)
    # Megatron 2021's "% of peak" with full recompute is ~4/3 of model FLOPs for GPT-3.
    assert 1.3 < flops.hardware_flops_per_token(GPT3, "full") / f < 1.34


# --------------------------------------------------------------------------- memory


def test_activation_formulas_match_korthikanti():
    s, b = GPT3, 1
    sbh = s.seq_len * b * s.d_model
    a_s_h = 5 * s.n_head * s.seq_len / s.d_model
    assert activation_bytes_per_layer(s, Layout()) == pytest.approx(sbh * (34 + a_s_h))
    assert activation_bytes_per_layer(s, Layout(tp=8)) == pytest.approx(sbh * (10 + (24 + a_s_h) / 8))
    assert activation_bytes_per_layer(s, Layout(tp=8, sequence_parallel=True)) == pytest.approx(
        sbh * (34 + a_s_h) / 8
    )
    assert activation_bytes_per_layer(
        s, Layout(tp=8, sequence_parallel=True, recompute="selective")
    ) == pytest.approx(sbh * 34 / 8)
    assert activation_bytes_per_layer(s, Layout(recompute="full")) == pytest.approx(2 * sbh)


def test_zero_stages_shard_the_sixteen_bytes_per_parameter():
    n = 64
    per = {}
    for z in (0, 1, 2, 3):
        m = memory_per_gpu(SMALL, Layout(dp=n, zero_stage=z, grad_bytes=2))
        per[z] = m["model_states_bytes"] / m["params_per_gpu"]
    assert per[0] == pytest.approx(16)
    assert per[1] == pytest.approx(2 + 2 + 12 / n)
    assert per[2] == pytest.approx(2 + (2 + 12) / n)
    assert 16 / n < per[3] < 16 / n + 1  # plus one gathered layer and a prefetched one


def test_gpt3_pure_dp_does_not_fit_80gb_but_tp8_pp8_does():
    pure = check(GPT3, Layout(dp=1024), H100.memory_bytes, 8)
    assert not pure.ok
    assert any(r.startswith("memory") for r in pure.reasons)
    assert pure.memory["model_states_bytes"] > 2.5e12  # 175B x 16 bytes
    mp = check(
        GPT3,
        Layout(tp=8, pp=8, dp=16, num_micro_batches=64, recompute="selective", sequence_parallel=True),
        H100.memory_bytes,
        8,
    )
    assert mp.ok, mp.reasons
    assert mp.memory["total_bytes"] < 80e9


# --------------------------------------------------------------------------- limits


def test_infeasible_layouts_are_reported_not_predicted():
    p = T.predict_step(GPT3, Layout(dp=1024), H100, C)
    assert not p.feasible and math.isnan(p.t_step) and math.isnan(p.mfu)
    assert any("memory" in r for r in p.reasons)

    crit = T.predict_step(
        SMALL, Layout(dp=8, micro_batch=8, num_micro_batches=4), H100, C, critical_batch_tokens=100_000
    )
    assert not crit.feasible and any("critical batch" in r for r in crit.reasons)

    r = check(SMALL, Layout(dp=64), H100.memory_bytes, 8, global_batch_seqs=32)
    assert not r.ok and any("less than one sequence" in x for x in r.reasons)

    tp16 = check(SMALL, Layout(tp=16), H100.memory_bytes, 8)
    assert any("TP16 exceeds" in x for x in tp16.reasons)


def test_choose_layout_says_when_pure_dp_cannot_reach_the_gpu_count():
    ch = T.choose_layout(GPT3, 100_000, 16 * 2**20, H100, C)
    assert ch.best is not None and ch.best.feasible
    assert ch.best.layout.tp * ch.best.layout.pp > 1
    assert not ch.pure_dp.feasible
    assert "pure data parallelism" in ch.explanation and "less than one sequence" in ch.explanation
    assert "assumed layout" in ch.explanation
    assert ch.best.tokens_per_step / 100_000 < 2048  # fewer tokens per GPU than one sequence


def test_choose_layout_keeps_pure_dp_for_a_small_model_on_one_node():
    ch = T.choose_layout(SMALL, 8, 2**19, H100, C)
    assert ch.best.layout.tp == 1 and ch.best.layout.pp == 1
    assert ch.pure_dp.feasible


def test_no_layout_when_nothing_fits():
    ch = T.choose_layout(GPT3, 8, 2**22, H100, C)
    assert ch.best is None
    assert "no feasible layout" in ch.explanation


def test_pipeline_bubble_and_stage_imbalance():
    lay = Layout(tp=8, pp=8, dp=1, num_micro_batches=64, recompute="selective", sequence_parallel=True)
    p = T.predict_step(GPT3, lay, H100, C)
    assert p.t_bubble == pytest.approx(7 / 64 * p.t_compute)
    inter = T.predict_step(GPT3, replace(lay, virtual_stages=2), H100, C)
    assert inter.t_bubble == pytest.approx(p.t_bubble / 2)
    assert p.mfu == pytest.approx(flops.mfu(p.tokens_per_s, GPT3, 64, H100.peak_flops))


# --------------------------------------------------------------------------- fitting measured runs

TRUE = {"rate": 2.0e12, "overlap": 0.6, "straggler_cv": 0.02, "alpha": 4e-5, "busbw": 1.0e9}


def synthetic_runs(noise: float = 0.005, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    shapes = [
        flops.Shape(2, 64, 2, 256, 128),
        flops.Shape(4, 256, 4, 256, 128),
        flops.Shape(8, 640, 8, 256, 128),
    ]
    p = np.array([TRUE[k] for k in T.MEASURED_PARAMS])
    for s in shapes:
        for tok in (1024, 4096, 16384):
            for n in (1, 2, 3, 4, 6, 8):
                x = measured._measured_inputs(n, tok, flops.flops_per_token(s), flops.params_total(s), 4.0)
                t = float(measured._measured_model(p, *x)) * math.exp(rng.normal(0, noise))
                comm = float(x[3] * TRUE["alpha"] + x[4] * x[2] / TRUE["busbw"]) * math.exp(
                    rng.normal(0, noise)
                )
                rows.append(
                    {
                        "model": f"m{s.d_model}",
                        "N": flops.params_nonembedding(s),
                        "N_total": flops.params_total(s),
                        "flops_per_token": flops.flops_per_token(s),
                        "world_size": n,
                        "tokens_per_device_per_step": tok,
                        "step_time_s": t,
                        "comm_time_s": comm if n > 1 else None,
                        "tokens_per_s": tok * n / t,
                        "dtype": "fp32",
                    }
                )
    return pd.DataFrame(rows)


def test_fit_recovers_known_coefficients_from_synthetic_step_times():
    fit = T.fit_measured(synthetic_runs(), n_bootstrap=30)
    p = fit.params
    assert p["rate"] == pytest.approx(TRUE["rate"], rel=0.02)
    assert p["busbw"] == pytest.approx(TRUE["busbw"], rel=0.05)
    assert p["alpha"] == pytest.approx(TRUE["alpha"], rel=0.15)
    assert p["overlap"] == pytest.approx(TRUE["overlap"], abs=0.05)
    assert p["straggler_cv"] == pytest.approx(TRUE["straggler_cv"], abs=0.005)
    ci = fit.to_dict()["intervals_90"]
    assert ci["rate"][0] <= TRUE["rate"] * 1.01 and ci["rate"][1] >= TRUE["rate"] * 0.99
    pred = fit.predict(8, 4096, 1e8, 1e7)
    assert pred["lo"] <= pred["value"] <= pred["hi"]


def test_fit_needs_two_world_sizes():
    df = synthetic_runs()
    with pytest.raises(ValueError, match="world sizes"):
        T.fit_measured(df[df["world_size"] == 2])


def test_usl_recovers_its_parameters():
    n = np.array([1, 2, 4, 8, 16, 32, 64], float)
    x = usl.usl(n, 1000.0, 0.03, 0.0005)
    fit = usl.fit_usl(n, x, n_bootstrap=0)
    assert fit.lam == pytest.approx(1000.0, rel=1e-4)
    assert fit.sigma == pytest.approx(0.03, rel=1e-3)
    assert fit.kappa == pytest.approx(0.0005, rel=1e-3)
    assert fit.peak_n() == pytest.approx(math.sqrt(0.97 / 0.0005))
    with pytest.raises(ValueError, match="3 distinct"):
        usl.fit_usl([1, 2], [1.0, 1.9])


def test_leave_largest_out_reports_both_models():
    out = T.leave_largest_out(synthetic_runs(), n_bootstrap=0)
    assert out["held_out_world_size"] == 8
    assert len(out["rows"]) == 9
    # Data made by the grey-box law: it predicts the held-out count closely; the USL is reported beside it.
    assert out["median_abs_greybox_error"] < 0.02
    assert out["median_abs_usl_error"] is not None
