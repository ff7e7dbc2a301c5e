"""Slider speed: a new outlier ratio must be a threshold lookup, not a new sort.

On the real SmolLM2 (106M quantizable weights) with real gradients, times:
  rank        sorting once (the reference way would repeat this at every ratio)
  new ratio   kept counts per Linear + BPW and size (what the slider needs)
  masks       full boolean masks at a ratio (what quantization needs)
  render      the app's whole slider handler work: table + heatmap + bars + sizes
Target: new ratio < 50 ms. Writes bench/results/selection.json.
"""

from __future__ import annotations

import time

from _common import median, no_options, write_result

from tacq.circuit.select import Selection


def timed(fn, n: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    no_options(__doc__)
    from tacq.circuit.select import rank
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.models import load_model
    from tacq.study.workflow import Study

    study = Study(load_model(), load_task("antonyms"), DataConfig(max_examples=16))
    study.collect()
    sel = Selection("msg", 2)
    scores = study.scores(sel)
    t = time.perf_counter()
    ranking = rank(scores, 0.02)
    t_rank = time.perf_counter() - t
    study.scorer.rankings[sel.ranking_key] = ranking
    ratios = [0.001 * (i % 20 + 1) for i in range(20)]
    it = iter(ratios * 100)

    def new_ratio():
        p = next(it)
        ranking.counts(p)
        study.size_at(sel.at(ratio=p), ranking)

    def masks():
        ranking.masks(next(it))

    from app import circuit_tab

    def render():
        circuit_tab.render(study, ranking, "msg", 2, 100 * next(it))

    t_new = timed(new_ratio, 20)
    t_masks = timed(masks, 5)
    t_render = timed(render, 20)
    p95 = sorted(t_render)[int(0.95 * len(t_render)) - 1]
    print(f"rank once           {t_rank * 1e3:9.1f} ms   (a re-sort per ratio would cost this)")
    print(
        f"new ratio (median)  {median(t_new) * 1e3:9.2f} ms   x{t_rank / median(t_new):,.0f} "
        f"faster than re-sorting; target < 50 ms"
    )
    print(f"masks (median)      {median(t_masks) * 1e3:9.1f} ms")
    print(f"render (median/p95) {median(t_render) * 1e3:9.1f} / {p95 * 1e3:.1f} ms")
    write_result(
        "selection",
        {
            "weights": ranking.n_total,
            "rank_once_ms": t_rank * 1e3,
            "new_ratio_median_ms": median(t_new) * 1e3,
            "new_ratio_max_ms": max(t_new) * 1e3,
            "speedup_vs_resort": t_rank / median(t_new),
            "masks_median_ms": median(t_masks) * 1e3,
            "render_median_ms": median(t_render) * 1e3,
            "render_p95_ms": p95 * 1e3,
            "target_new_ratio_ms": 50,
        },
    )


if __name__ == "__main__":
    main()
