"""A real 2-worker `--distribute multi-worker` pretrain on localhost ends with equal weights (issue 15).

Two `ssl-keras pretrain` processes with `TF_CONFIG` on loopback ports, through the same code
as `benchmarks/multi_worker_localhost.py` (BENCHMARKS.md has its wall time).
"""

import importlib.util
import json
import pathlib

import pytest

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "multi_worker_localhost.py"


@pytest.mark.large
def test_two_localhost_workers_end_with_identical_weights(tmp_path):
    spec = importlib.util.spec_from_file_location("multi_worker_localhost", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    _, run_dirs, outputs = benchmark.run_workers(str(tmp_path), epochs=2, images=32)
    assert all("distribute: multi-worker, 2 replicas of 4 images" in o for o in outputs)
    results = [json.loads((pathlib.Path(d) / "result.json").read_text()) for d in run_dirs]
    assert results[0]["distribution"]["strategy"] == "multi-worker"
    assert results[0]["loss"] == results[1]["loss"]
    assert benchmark.weight_difference(run_dirs) == 0.0
