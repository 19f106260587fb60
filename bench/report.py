"""The saved results: a JSON-ready report and the markdown table rendered from it alone.

The markdown needs nothing but the JSON, so a saved results file can be rendered again:
``python bench/report.py bench/results/NAME.json`` rewrites ``bench/results/NAME.md``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from targets import config_shape, median
from timing import Config
from variants import flops, label, shape_text


def config_json(config: Config, contenders: list[str]) -> dict[str, Any]:
    """One configuration as saved: every raw timing, the checks, memory and load."""
    gemm = config.median("gemm")
    variants = {}
    for kind in config.kinds:
        t = config.median(kind)
        variants[kind] = {
            "label": label(kind),
            "median_s": t,
            "samples_s": config.samples.get(kind, []),
            "warmup_s": config.warmup.get(kind),
            "networks_per_sample": config.batch.get(kind),
            "gflops": flops(config.shape) / t / 1e9 if t else None,
            "fraction_of_gemm": gemm / t if gemm and t else None,
            "speedup_of": {
                b: t / other for b in contenders if t and (other := config.median(f"initscope:{b}"))
            },
            "check": config.checks.get(kind),
            "memory": config.memory.get(kind),
        }
    return {
        "shape": {"n_samples": config.shape[0], "width": config.shape[1], "depth": config.shape[2]},
        "dtype": config.dtype,
        "flops": flops(config.shape),
        "variants": variants,
        "cpu_load": config.load,
        "notes": config.notes,
    }


def fmt_ms(seconds: float | None) -> str:
    """Milliseconds with three significant digits or so; ``–`` when not timed."""
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_mb(entry: dict[str, Any] | None) -> str:
    """Peak RSS, and in parentheses how much of it the network added to the ready process."""
    if not entry:
        return "–"
    if "error" in entry:
        return "error"
    peak, ready = entry["peak_rss_bytes"], entry["rss_ready_bytes"]
    return f"{peak / 1e6:.0f} (+{max(peak - ready, 0) / 1e6:.0f})"


def _blas_lines(blas: list[dict[str, Any]] | str) -> list[str]:
    if isinstance(blas, str):
        return [blas]
    lines = []
    for pool in blas:
        parts = [f"{pool.get('internal_api')} {pool.get('version') or ''}".strip()]
        if pool.get("architecture") or pool.get("corename"):
            parts.append(f"kernels {pool.get('architecture') or pool.get('corename')}")
        parts.append(f"{pool.get('num_threads')} threads")
        parts.append(f"`{pool.get('filepath')}`")
        lines.append(f"{pool.get('user_api')} runtime: " + ", ".join(parts))
    return lines


def _header(report: dict[str, Any]) -> list[str]:
    meta = report["metadata"]
    cpu = meta["cpu"]
    lines = [f"# initscope benchmark: {report['machine']}", ""]
    for warning in report["warnings"]:
        lines += [f"> **WARNING** {warning}", ""]
    lines += [
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}, initscope {meta['initscope_version']}"
        + (f" (git {meta['git_commit']})" if meta.get("git_commit") else "")
        + (
            f", extension built {meta['initscope_extension']['built']}"
            if meta.get("initscope_extension")
            else ""
        )
        + f", NumPy {meta['numpy_version']}, Python {meta['python_version']}",
        f"- CPU: {cpu.get('model_name')} (family {cpu.get('family')} model {cpu.get('model')}),"
        f" {cpu.get('usable_cpus')} usable CPUs, SIMD {' '.join(cpu.get('simd', []))}"
        + (", virtual machine" if cpu.get("hypervisor") else ""),
        f"- initscope backends: {', '.join(meta['available_backends'])}; threads "
        f"{meta['initscope_threads']}",
    ]
    lines += [f"- {line}" for line in _blas_lines(meta["blas"])]
    torch_info = meta.get("torch")
    if torch_info:
        lines.append(
            f"- torch {torch_info['version']}, {torch_info['num_threads']} threads, "
            f"{torch_info.get('blas')}"
        )
    env = {k: v for k, v in meta["environment"].items() if v is not None}
    lines.append(f"- environment: {env if env else 'no BLAS/OpenMP variables set'}")
    lines.append(f"- load average at start / end: {meta['loadavg_start']} / {meta['loadavg_end']}")
    if meta["quick"]:
        lines.append("- `--quick`: small shapes, 3 rounds; peak RSS of the memory target only")
    return lines


def _table(configs: list[dict[str, Any]], contenders: list[str]) -> list[str]:
    head = ["shape n×w×L", "dtype", "variant", "ms/network", "spread", "GFLOP/s", "of GEMM",
            "peak RSS MB (+run)", *[f"×{b}" for b in contenders], "check"]  # fmt: skip
    align = ["---"] * 3 + ["---:"] * (len(head) - 4) + ["---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for config in configs:
        shape = config_shape(config)
        gemm = median(config, "gemm")
        for kind, variant in config["variants"].items():
            t = variant["median_s"]
            samples = variant["samples_s"]
            spread = (max(samples) - min(samples)) / t if t and len(samples) > 1 else None
            check = variant["check"]
            row = [
                shape_text(shape),
                config["dtype"],
                label(kind),
                fmt_ms(t),
                f"±{spread / 2:.0%}" if spread is not None else "–",
                f"{flops(shape) / t / 1e9:.1f}" if t else "–",
                f"{gemm / t:.0%}" if gemm and t else "–",
                fmt_mb(variant["memory"]),
            ]
            for backend in contenders:
                mine = median(config, f"initscope:{backend}")
                row.append(f"{t / mine:.2f}" if t and mine else "–")
            if check is None:
                row.append("–")
            else:
                row.append("ok" if check["ok"] else "**WRONG**: " + "; ".join(check["problems"]))
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _notes(configs: list[dict[str, Any]]) -> list[str]:
    def text(config: dict[str, Any]) -> str:
        return f"{shape_text(config_shape(config))} {config['dtype']}"

    notes = sorted({f"{text(c)}: {n}" for c in configs for n in c["notes"]})
    busy = [
        f"{text(c)}: other processes used {c['cpu_load']['other_share']:.0%} of the CPUs while "
        "timing"
        for c in configs
        if c["cpu_load"] and c["cpu_load"]["other_share"] > 0.05
    ]
    if not notes and not busy:
        return []
    return ["", "Notes:", ""] + [f"- {n}" for n in notes + busy]


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Performance targets", ""]
    lines += ["| target | backend | measured | required | status |", "|---|---|---:|---:|---|"]
    for row in rows:
        measured = row["measured"]
        if measured is None:
            shown = "–"
        elif row["unit"] == "×":
            shown = f"{measured:.2f}×"
        elif row["unit"] == "of GEMM":
            shown = f"{measured:.0%}"
        else:
            shown = f"{measured:.0f} MB"
        required = row["required"]
        sign = "≥" if row.get("larger_is_better", row["unit"] != "MB") else "≤"
        need = (
            f"{sign} {required:.2f}×" if row["unit"] == "×"
            else f"{sign} {required:.0%}" if row["unit"] == "of GEMM"
            else f"{sign} {required:.0f} MB"
        )  # fmt: skip
        status = row["status"] if row["status"] != "NOT MET" else "**NOT MET**"
        if row["note"]:
            status += f" ({row['note']})"
        lines.append(f"| {row['target']} | {row['backend']} | {shown} | {need} | {status} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The human summary of a report: environment, one row per variant, notes, the targets."""
    contenders = report["contenders"]
    lines = _header(report)
    lines += [
        "",
        "ms per network: median over rounds (networks run back to back, variants alternating). "
        "GFLOP/s = 2·n·w²·L / time. *of GEMM* = GEMM-alone time / this time. "
        + " ".join(f"*×{b}* = this time / initscope {b}'s." for b in contenders)
        + " Peak RSS: of a fresh process running one network (VmHWM, MB = 10⁶ bytes); in"
        " parentheses, what the network added after the imports and setup.",
        "",
    ]
    lines += _table(report["configs"], contenders)
    lines += _notes(report["configs"])
    lines += _targets(report["targets"])
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], path: str) -> str:
    """Save ``report`` as JSON at ``path`` and its markdown next to it; the markdown's path."""
    base = path[:-5] if path.endswith(".json") else path
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
    with open(base + ".md", "w") as handle:
        handle.write(markdown(report))
    return base + ".md"


def main(argv: list[str]) -> int:
    """Render the markdown of saved results again: ``python bench/report.py RESULTS.json...``."""
    if not argv or any(arg.startswith("-") for arg in argv):
        print("usage: python bench/report.py RESULTS.json [...]", file=sys.stderr)
        return 2
    for path in argv:
        with open(path) as handle:
            report = json.load(handle)
        base = path[:-5] if path.endswith(".json") else path
        with open(base + ".md", "w") as handle:
            handle.write(markdown(report))
        print(f"wrote {base}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
