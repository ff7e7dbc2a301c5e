"""The one-click demo: collect, quantize TaCQ 3-bit and 2-bit plus GPTQ 2-bit, evaluate.

A list of stages with expected times, run one after another with a timeline a UI or the
CLI can show. Expected times were measured on the 2-core CPU this project is developed on
(`python -m tacq demo` with empty caches: 214 s in all): gradients ~0.2 s per example, a
TaCQ variant ~96 s (unmasked GPTQ for dW, then masked GPTQ). GPTQ 2-bit comes free after
TaCQ 2-bit: it is the cached reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from tacq.evaluate import EvalResult, evaluate_variants
from tacq.progress import Progress, no_progress, scaled
from tacq.select import DEFAULT_RATIO, Selection
from tacq.variant import Variant
from tacq.workflow import Study

SUGGESTED_PROMPT = "Give the opposite of each word.\nhot -> cold\nbig -> small\nearly ->"


@dataclass
class Stage:
    name: str
    expected_s: float
    run: Callable[[Progress], object]
    status: str = "waiting"  # waiting | running | done | failed
    elapsed_s: float = 0.0


@dataclass
class DemoRun:
    stages: list[Stage]
    variants: list[Variant] = field(default_factory=list)
    results: list[EvalResult] = field(default_factory=list)  # original first

    def timeline(self) -> list[dict]:
        return [
            {
                "stage": s.name,
                "status": s.status,
                "elapsed s": round(s.elapsed_s, 1),
                "expected s": round(s.expected_s),
            }
            for s in self.stages
        ]

    @property
    def elapsed_s(self) -> float:
        return sum(s.elapsed_s for s in self.stages)

    @property
    def expected_s(self) -> float:
        return sum(s.expected_s for s in self.stages)


def demo_specs(quick: bool) -> list[tuple[int, str]]:
    """(bits, 'tacq' | 'gptq') of the variants the demo makes, in order."""
    return [(2, "tacq"), (2, "gptq")] if quick else [(3, "tacq"), (2, "tacq"), (2, "gptq")]


def plan_demo(study: Study, quick: bool = False) -> DemoRun:
    """The stages: quick skips the 3-bit variant (for tests and slow machines)."""
    demo = DemoRun([])
    n = len(study.calib_examples)
    demo.stages.append(Stage("collect gradients", 2 + 0.2 * n, study.collect))
    specs = demo_specs(quick)
    for bits, kind in specs:
        if kind == "tacq":

            def make(p: Progress, bits: int = bits) -> Variant:
                return study.quantize(Selection("tacq", bits, DEFAULT_RATIO), progress=p)

            name, expected = f"quantize TaCQ {bits}-bit ({100 * DEFAULT_RATIO:.2f}%)", 100.0
        else:

            def make(p: Progress, bits: int = bits) -> Variant:
                return study.quantize(Selection(bits=bits, ratio=0.0), "gptq", p)

            name, expected = f"quantize GPTQ {bits}-bit (no circuit)", 1.0

        def run(p: Progress, make=make) -> Variant:
            v = make(p)
            demo.variants.append(v)
            return v

        demo.stages.append(Stage(name, expected, run))
    demo.stages.append(
        Stage("evaluate on held-out", 4.0 * (len(specs) + 1), lambda p: _evaluate(study, demo, p))
    )
    return demo


DEMO_HELDOUT = 32  # the demo scores this many held-out examples, however large the task


def _evaluate(study: Study, demo: DemoRun, progress: Progress) -> None:
    """The held-out table on a fixed subset, so the demo's time does not grow with the task."""
    task = replace(study.task, heldout=tuple(study.task.heldout[:DEMO_HELDOUT]))
    demo.results, _ = evaluate_variants(study.lm, task, demo.variants, None, progress)


def run_demo(demo: DemoRun, progress: Progress | None = None) -> Iterator[DemoRun]:
    """Run the stages in order, yielding the run after each stage starts and ends."""
    progress = progress or no_progress
    total = len(demo.stages)
    for i, stage in enumerate(demo.stages):
        stage.status = "running"
        yield demo
        t = time.perf_counter()
        try:
            stage.run(scaled(progress, i / total, (i + 1) / total))
        except BaseException:
            stage.status = "failed"
            stage.elapsed_s = time.perf_counter() - t
            raise
        stage.elapsed_s = time.perf_counter() - t
        stage.status = "done"
        yield demo
