"""Print every committed result in bench/results/ as the Markdown tables of bench/README.md.

    python bench/tables.py > /tmp/tables.md
Only formats what the benchmark scripts measured; it computes nothing new.
"""

from __future__ import annotations

import json

from _common import ROOT
from quality import cross_markdown, markdown

from tacq.runs import PLAIN_METHODS
from tacq.saliency import metrics_in

RESULTS = ROOT / "bench" / "results"


def load(topic: str) -> dict | None:
    path = RESULTS / f"{topic}.json"
    return json.loads(path.read_text()) if path.exists() else None


def env_line(d: dict) -> str:
    e = d["environment"]
    return f"*{e['device']}, torch {e['torch']}, {e['threads']} threads, commit {e['commit']}*"


def targets(q: dict) -> str:
    """The issue's quality targets, checked on the measured rows (held-out NLL)."""
    rows = [r for r in q["rows"] if r.get("seed", 0) == 0]
    out = [
        "| task | TaCQ best of all 2-bit rows | best baseline (2-bit) | gap closed 2-bit "
        "(target >= 50 %) | 3-bit TaCQ vs fp NLL (target <= +10 %) |",
        "|---|---|---|---|---|",
    ]
    baselines = {*PLAIN_METHODS, *metrics_in("baseline")}
    for task in sorted({r["task"] for r in rows}):
        two = {r["method"]: r for r in rows if r["task"] == task and r["bits"] == 2}
        three = {r["method"]: r for r in rows if r["task"] == task and r["bits"] == 3}
        if "tacq" not in two:
            continue
        others = {m: r["answer_nll"] for m, r in two.items() if m not in ("fp", "tacq")}
        best_m = min(others, key=others.get)
        base = {m: v for m, v in others.items() if m in baselines}
        best_b = min(base, key=base.get)
        t = two["tacq"]["answer_nll"]
        win = "yes" if t < others[best_m] else f"no ({best_m} {others[best_m]:.3f})"
        gap = two["tacq"].get("gap_closed")
        rel = ""
        if "tacq" in three and "fp" in three:
            rel = f"{three['tacq']['answer_nll'] / three['fp']['answer_nll'] - 1:+.0%}"
        out.append(
            f"| {task} | {win}: TaCQ {t:.3f} | {best_b} {base[best_b]:.3f} | "
            f"{'' if gap is None else f'{gap:.0%}'} | {rel} |"
        )
    return "\n".join(out)


def main() -> None:
    q = load("quality")
    if q:
        print("## Quality (held-out, p = 0.35 %)\n")
        print(env_line(q) + "\n")
        print(markdown(q["rows"]) + "\n")
        print("### Targets\n")
        print(targets(q) + "\n")
        if q.get("cross_task"):
            print("### Cross-task: calibrate on one task, evaluate on another (2-bit)\n")
            print(cross_markdown(q["cross_task"]) + "\n")
    ab = load("ablations")
    if ab:
        print("### Ablations: answer-only loss, more examples (2-bit, p = 0.35 %)\n")
        print("| task | config | method | examples | answer NLL | exact match | gap closed |")
        print("|---|---|---|---|---|---|---|")
        for r in ab["rows"]:
            print(
                f"| {r['task']} | {r['config']} | {r['method']} | {r['calib_examples']} | "
                f"{r['answer_nll']:.3f} | {r['exact_match']:.3f} | {r['gap_closed']:.0%} |"
            )
        if ab.get("sweep"):
            print("\n### TaCQ outlier-ratio sweep\n")
            print("| task | bits | ratio | BPW | answer NLL | vs fp | exact match |")
            print("|---|---|---|---|---|---|---|")
            for r in ab["sweep"]:
                print(
                    f"| {r['task']} | {r['bits']} | {100 * r['ratio']:.2f}% | {r['bpw']:.3f} | "
                    f"{r['answer_nll']:.3f} | {r['answer_nll'] / r['fp_nll'] - 1:+.0%} | "
                    f"{r['exact_match']:.3f} |"
                )
        print()
    s = load("speed")
    if s:
        print("## Pipeline speed and memory\n")
        print(env_line(s) + "\n")
        old = s.get("stages_old_s")
        if old:
            print("| stage | old GPTQ path, s | fast GPTQ path, s |\n|---|---|---|")
            for k, v in s["stages_s"].items():
                print(f"| {k} | {old.get(k, float('nan')):.1f} | {v:.1f} |")
            print(
                f"| **total** (target < 300) | **{s['end_to_end_old_s']:.1f}** | "
                f"**{s['end_to_end_s']:.1f}** (x{s['end_to_end_speedup']:.2f}, target 1.6) |\n"
            )
            print(
                f"- held-out TaCQ 2-bit NLL: old {s['heldout_nll_variant_old']:.4f}, "
                f"new {s['heldout_nll_variant']:.4f} (the paths are bit-identical)"
            )
            g = s["gptq_compare"]
            print(
                f"- GPTQ over the whole model, same batches: unmasked {g['unmasked_old_s']:.1f} s"
                f" -> {g['unmasked_new_s']:.1f} s (x{g['unmasked_speedup']:.2f}), masked TaCQ "
                f"{g['masked_old_s']:.1f} s -> {g['masked_new_s']:.1f} s "
                f"(x{g['masked_speedup']:.2f}; {100 * g['rows_searched_again_share']:.0f} % of "
                f"rows hold a kept weight and are searched again), both x{g['pair_speedup']:.2f}"
                f" (target 2); codes bit-identical: {g['bit_identical']}"
            )
            d_old, d_new = s["demo_quick_old"], s["demo_quick_new"]
            print(
                f"- quick one-click demo: {d_old['total_s']:.1f} s -> {d_new['total_s']:.1f} s "
                f"(x{s['demo_quick_speedup']:.2f}, target 1.9)"
            )
        else:
            print("| stage | seconds |\n|---|---|")
            for k, v in s["stages_s"].items():
                print(f"| {k} | {v:.1f} |")
            print(f"| **total** (target < 300) | **{s['end_to_end_s']:.1f}** |\n")
        print(f"- peak RSS of the whole pipeline: **{s['peak_rss_mb']:,.0f} MB** (target < 4096)")
        print(
            f"- GPTQ: {s['gptq_model_s']:.1f} s for the whole model, "
            f"{s['gptq_per_block_s']:.2f} s per decoder block"
        )
        print(
            f"- gradients on {s['grads_examples']} examples: batched {s['grads_batched_s']:.2f} s"
            f" vs batch-size-1 autograd loop {s['grads_loop_s']:.2f} s -> "
            f"**x{s['grads_speedup']:.2f}** (target >= 3), max relative difference "
            f"{s['grads_max_rel_diff']:.1e} (target <= 1e-4)\n"
        )
    m = load("upload_memory")
    if m:
        print("## Reading a 20 MB upload\n")
        print(env_line(m) + "\n")
        print("| shape | extra memory MB | seconds | outcome |\n|---|---|---|---|")
        for k, r in m["shapes"].items():
            print(f"| {k} | {r['extra_mb']:.0f} | {r['seconds']:.2f} | {r['outcome']} |")
        print(f"\nWorst {m['worst_extra_mb']:.0f} MB extra (target <= {m['target_mb']}).\n")
    o = load("omp_wait")
    if o and "seconds" in o and isinstance(next(iter(o["seconds"].values())), dict):
        print("## OpenMP wait policy\n")
        print(env_line(o) + "\n")
        print("| policy, load | GPTQ 1536x576 2-bit s | grad products of one block ms |")
        print("|---|---|---|")
        for k, v in o["seconds"].items():
            print(f"| {k} | {v['gptq_1536x576_s']:.2f} | {v['grads_block_s'] * 1000:.1f} |")
        print()
    sel = load("selection")
    if sel:
        print("## Slider and selection\n")
        print(env_line(sel) + "\n")
        print(
            f"- new ratio (counts, BPW, sizes): median **{sel['new_ratio_median_ms']:.2f} ms**"
            f" (target < 50), x{sel['speedup_vs_resort']:,.0f} faster than re-sorting "
            f"({sel['rank_once_ms']:,.0f} ms)"
        )
        print(
            f"- full keep masks at a ratio: {sel['masks_median_ms']:.1f} ms; the app's whole "
            f"slider handler (table + heatmap + bars + sizes): median "
            f"{sel['render_median_ms']:.1f} ms, p95 {sel['render_p95_ms']:.1f} ms"
        )
    sl = load("slider_app")
    if sl:
        print(
            f"- through the running app in chromium, release to redrawn heatmap: median "
            f"**{sl['median_ms']:.0f} ms**, p95 {sl['p95_ms']:.0f} ms over {sl['moves']} moves"
            f" (target < 300)\n"
        )
    a = load("accumulators")
    if a:
        print("## Low-memory gradient accumulators (SmolLM2, p = 0.35 %)\n")
        print("| metric | kept weights | top-k overlap, fp32 sums on host | bf16 sums |")
        print("|---|---|---|---|")
        for m, d in a["metrics"].items():
            o = d["top_k_overlap_vs_fp32"]
            print(f"| {m} | {d['k']:,} | {o['fp32 on host']:.4f} | {o['bf16']:.4f} |")
        print(f"\nbf16 sums: max relative error of G {a['bf16_max_rel_error_of_G']:.1e}.\n")
    g = load("large_gpu")
    print("## Large model on a GPU\n")
    if g:
        print(
            f"{env_line(g)}: gradients {g['grad_s_per_1k_tokens']:.3f} s per 1k tokens "
            f"(peak {g['grad_peak_gb']:.1f} GB); GPTQ {g['gptq_s_per_block']:.1f} s per block "
            f"(peak {g['gptq_peak_gb']:.1f} GB); extrapolated full run "
            f"{g['extrapolated_total_min']:.1f} min."
        )
    else:
        print("Not measured: no GPU was available. `python bench/large_gpu.py` is ready.")


if __name__ == "__main__":
    main()
