"""The benchmark suite's machinery on a tiny configuration: results checked, files complete.

Nothing here asserts a time: timings are only required to exist and be positive.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import initscope

BENCH = Path(__file__).resolve().parents[1] / "bench"
SHAPE = (240, 128, 3)
BASELINES = ["seed", "best", "best_mt", "gemm"]

pytestmark = pytest.mark.skipif(
    not (BENCH / "run.py").is_file(), reason="bench/ is not in this tree"
)


def _bench(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str, list[str]]:
    """The suite run once from its command line: exit code, JSON, markdown, backends."""
    backends = [b for b in ("cpp", "numpy") if b in initscope.available_backends()]
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    code = _bench("run").main(
        ["--quick", "--repeat", "1", "--no-memory", "--shapes", "x".join(map(str, SHAPE)),
         "--backends", ",".join(backends), "--baselines", ",".join(BASELINES),
         "--out", str(out)]
    )  # fmt: skip
    return code, json.loads(out.read_text()), out.with_suffix(".md").read_text(), backends


def test_the_package_ships_no_benchmark() -> None:
    package = Path(initscope.__file__).parent
    assert not list(package.glob("bench*.py"))


def test_every_result_check_passes(saved: tuple[int, dict, str, list[str]]) -> None:
    code, report, _, backends = saved
    assert code == 0
    assert report["results_ok"] is True
    assert report["contenders"] == ([b for b in backends if b != "numpy"] or ["numpy"])
    n, w, depth = SHAPE
    for config in report["configs"]:
        expected = [f"initscope:{b}" for b in backends] + [
            b for b in BASELINES if b != "seed" or config["dtype"] == "float64"
        ]
        assert list(config["variants"]) == expected
        for kind, variant in config["variants"].items():
            check = variant["check"]
            if kind == "gemm":  # returns nothing to check
                assert check is None
                continue
            assert check["ok"], (kind, check["problems"])
            assert check["against"] == "best"
            assert check["networks_checked"] >= 1
            assert 0.3 < min(check["layer_std_median"]) <= max(check["layer_std_median"]) < 0.8
            assert len(check["layer_std_median"]) == depth


def test_json_has_every_field_and_positive_times(saved: tuple[int, dict, str, list[str]]) -> None:
    _, report, _, _ = saved
    assert set(report) == {
        "machine", "warnings", "metadata", "contenders", "configs", "memory_target",
        "results_ok", "targets",
    }  # fmt: skip
    meta = report["metadata"]
    assert meta["quick"] is True
    assert meta["initscope_version"] == initscope.__version__
    assert meta["available_backends"] == initscope.available_backends()
    assert set(meta["environment"]) >= {"OPENBLAS_CORETYPE", "OMP_NUM_THREADS"}
    assert meta["cpu"]["os_cpu_count"] == os.cpu_count()
    assert meta["main_process_peak_rss_bytes"] >= 0
    assert report["memory_target"] == {}
    assert [c["dtype"] for c in report["configs"]] == ["float64", "float32"]
    for config in report["configs"]:
        n, w, depth = SHAPE
        assert config["shape"] == {"n_samples": n, "width": w, "depth": depth}
        assert config["flops"] == 2.0 * n * w * w * depth
        for variant in config["variants"].values():
            assert len(variant["samples_s"]) == 1
            assert variant["median_s"] > 0 and variant["warmup_s"] > 0
            assert variant["networks_per_sample"] >= 1
            assert variant["gflops"] > 0 and variant["fraction_of_gemm"] > 0
            assert set(variant["speedup_of"]) == set(report["contenders"])
    # the speed-up targets are about the seed experiment, which this run did not time
    assert report["targets"]
    assert {row["status"] for row in report["targets"]} == {"not measured"}


def test_markdown_renders_from_the_saved_json(saved: tuple[int, dict, str, list[str]]) -> None:
    _, report, text, _ = saved
    assert text == _bench("report").markdown(report)
    rows = [line for line in text.splitlines() if line.startswith("| 240×128×3 |")]
    assert len(rows) == sum(len(c["variants"]) for c in report["configs"])
    assert all(row.endswith(("| ok |", "| – |")) for row in rows)
    assert "## Performance targets" in text
    assert "issue" not in text.lower()


def test_checks_catch_a_wrong_scale_and_a_lost_value() -> None:
    timing, variants = _bench("timing"), _bench("variants")
    best = variants.make_runner("best", SHAPE, "float64")
    right = [best(seed) for seed in range(3)]
    scaled = [variants.Outcome(o.std * 1.2, o.hist) for o in right]
    lost = [variants.Outcome(o.std, o.hist - np.eye(SHAPE[2], o.hist.shape[1], dtype=int))
            for o in right]  # fmt: skip
    config = timing.Config(SHAPE, "float64", ["best", "scaled", "lost"])
    timing.check_outcomes(config, {"best": right, "scaled": scaled, "lost": lost})
    assert config.checks["best"]["ok"]
    assert not config.checks["scaled"]["ok"]
    assert config.checks["scaled"]["max_std_deviation"] == pytest.approx(0.2, abs=0.02)
    assert config.checks["scaled"]["problems"][0].startswith("layer std off by")
    assert config.checks["lost"]["problems"] == [
        f"histogram holds {SHAPE[0] * SHAPE[1] - 1} of {SHAPE[0] * SHAPE[1]} values"
    ]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS needs Linux")
def test_memory_probe_reports_a_peak() -> None:
    entry = _bench("memory").measure_memory("best", SHAPE, "float64", timeout=120)
    assert "error" not in entry, entry
    assert entry["peak_rss_bytes"] >= entry["rss_ready_bytes"] > 0
    assert entry["seconds"] > 0
    assert len(entry["std"]) == SHAPE[2]
