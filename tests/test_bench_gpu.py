"""bench/bench_gpu.py runs end to end (a tiny bfloat16 GPT-2 on the CPU) so it cannot rot."""

from __future__ import annotations

import importlib.util
import math
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu",
                                                  os.path.join(ROOT, "bench", "bench_gpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_tiny_runs_and_reports(capsys) -> None:
    bench = _load()
    r = bench.main(["--tiny", "--steps", "4", "--warmup", "1", "--seq", "32",
                    "--peak-tflops", "1.0"])
    out = capsys.readouterr().out
    assert r["dtype"] == "bfloat16" and r["seq"] == 32 and r["steps"] == 4
    assert r["tokens_per_s"] > 0 and math.isfinite(r["last_loss"])
    # training on two fixed batches lowers the loss (AdamW at 6e-4 for 5 steps)
    assert r["last_loss"] < r["first_loss"]
    # MFU is the model FLOPs rate over the given peak
    assert math.isclose(r["mfu"], r["model_tflops"] / 1.0, rel_tol=1e-9)
    assert "MFU" in out and "nanoGPT" in out and "llm.c" in out


def test_peak_table() -> None:
    bench = _load()
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert bench.peak_tflops("cpu") is None
