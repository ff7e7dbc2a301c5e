"""The one-click demo: collect, quantize TaCQ 3-bit and 2-bit plus GPTQ 2-bit per channel
and with scales per 128 inputs (g128, what practitioners run at 2 bits), evaluate.

A list of stages with expected times, run one after another with a timeline a UI or the
CLI can show. The default task and TaCQ recipe are the ones bench/demo_pick.py measured on
the tasks' dev splits (bench/results/demo_pick.json; a test keeps them in step). Expected
times are this machine's own: the stage times of the last finished demo of the same model
and mode (kept in $TACQ_HOME), else a first guess scaled from the 2-core CPU this project
is developed on. A GPTQ variant whose settings are TaCQ's reference comes free after TaCQ
(the cached reference); any other is a GPTQ pass of its own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch

from tacq.cache import tacq_home, write_text_atomic
from tacq.data.tasks import TaskSet
from tacq.eval.evaluate import EvalResult, evaluate_variants
from tacq.progress import Progress, no_progress, scaled
from tacq.quant.recipe import Recipe
from tacq.quant.variant import Variant
from tacq.study.tables import model_label
from tacq.study.workflow import Study

SUGGESTED_PROMPT = "Give the opposite of each word.\nhot -> cold\nbig -> small\nearly ->"
# Picked from measurements on dev (python bench/demo_pick.py; tests/test_demo.py
# checks these against bench/results/demo_pick.json).
DEMO_TASK = "records"
# The demo's TaCQ at 2 bits and (full demo) 3 bits, as a tacq.quant.recipe key:
DEMO_RECIPE = "tacq_p0.2_d0.1_roth"
QUICK_EXAMPLES, FULL_EXAMPLES = 8, 32
# The GPTQ baselines, per channel and g128. The quick demo makes only g128 when both do not
# fit 3 minutes on the development machine's idle 2-core CPU: bench/demo_time.py times the
# quick demo with both (tests/test_demo.py holds this to it).
GPTQ_BASELINES = (Recipe(bits=2, ratio=0.0), Recipe(bits=2, ratio=0.0, group_size=128))
QUICK_GPTQ = (GPTQ_BASELINES[1],)
QUICK_LIMIT_S = 180

# First-run stage times on the development machine (2-core CPU, SmolLM2-135M, empty
# caches; bench/demo_time.py) and its speed probe: a first guess elsewhere is these times
# scaled by this machine's probe and the model's number of quantizable weights.
REF_PROBE_S = 0.169  # bench/results/demo_time.json "probe_s" of the calibrating run
REF_WEIGHTS = 106_168_320  # SmolLM2-135M's q/k/v/o/gate/up/down weights
REF_STAGE_S = {  # fitted to the first (empty-cache) quick and full demos on records of
    # bench/demo_time.py (2026-12-07: measured times / 1.61, that run's probe over REF_PROBE_S)
    "gradients per example": 0.6,
    "TaCQ, cold caches": 90.0,  # the unmasked reference (for dW) plus the masked run
    "TaCQ per example": 1.44,  # calibration passes grow with the examples
    "GPTQ, cached reference": 0.5,
    "GPTQ, own pass": 79.0,  # a plain GPTQ pass TaCQ's ranking did not make (g128)
    "GPTQ per example": 0.18,
    "evaluation per model": 7.5,
}


def suggested_prompt(task: TaskSet) -> str:
    """The chat's first prompt: the task's first held-out prompt (a real one, not picked)."""
    return task.heldout[0].prompt if task.heldout else SUGGESTED_PROMPT


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
    times_key: str = ""  # where this run's stage times are kept for the next estimate
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


def demo_recipe(bits: int) -> Recipe:
    """The demo's TaCQ at `bits`: DEMO_RECIPE's settings."""
    return Recipe.from_key(DEMO_RECIPE, bits)


def demo_recipes(quick: bool, gptq: tuple[Recipe, ...] | None = None) -> list[Recipe]:
    """The variants the demo makes, in order: TaCQ (3-bit unless quick, then 2-bit), then
    the GPTQ baselines (`gptq`: these instead of the mode's own, as bench/demo_time.py
    times the quick demo with both)."""
    tacq = [demo_recipe(2)] if quick else [demo_recipe(3), demo_recipe(2)]
    if gptq is None:
        gptq = QUICK_GPTQ if quick else GPTQ_BASELINES
    return tacq + list(gptq)


def shares_reference(tacq: Recipe, gptq: Recipe) -> bool:
    """Whether `gptq` comes free once `tacq` ran: plain GPTQ at its bits and group size is
    the reference its ranking quantized (dW), whatever damping or basis TaCQ's own pass
    uses, and it is cached."""
    from tacq.circuit.saliency import METRICS

    plain = Recipe(bits=tacq.bits, ratio=0.0, group_size=tacq.group_size)
    return bool(tacq.ratio) and METRICS[tacq.metric].needs_quant and gptq == plain


def speed_probe() -> float:
    """Seconds for a fixed GPTQ job (a 576 x 576 matrix, 2 bits): how fast this machine
    runs the demo's main work, against REF_PROBE_S on the development machine."""
    from tacq.formats.grid import GPTQConfig
    from tacq.quant.gptq import gptq_stacked

    if "s" not in _PROBE:
        g = torch.Generator().manual_seed(0)
        W = 0.02 * torch.randn(576, 576, generator=g)
        X = torch.randn(1024, 576, generator=g)
        H = 2 * X.T @ X / len(X)
        times = []
        for _ in range(3):  # the first is a warm-up
            t = time.perf_counter()
            gptq_stacked([W], H, [None], GPTQConfig(bits=2))
            times.append(time.perf_counter() - t)
        _PROBE["s"] = sorted(times[1:])[0]
    return _PROBE["s"]


_PROBE: dict[str, float] = {}


WARM_SHARE = {
    "gradients per example": 0.03,
    "TaCQ, cold caches": 0.53,
    "TaCQ per example": 0.53,
    "GPTQ, own pass": 0.02,  # a plain GPTQ variant is a reference: read from its cache
    "GPTQ per example": 0.02,
}


def first_guess(study: Study, warm: bool = False) -> dict[str, float]:
    """REF_STAGE_S scaled to this machine (speed probe) and model (quantizable weights);
    warm: gradients and references are cached (read, not computed; WARM_SHARE of the
    time, as bench/demo_time.py's second runs measured)."""
    from tacq.models import quantizable_linears

    weights = sum(m.weight.numel() for m in quantizable_linears(study.lm.model).values())
    scale = speed_probe() / REF_PROBE_S * weights / REF_WEIGHTS
    share = WARM_SHARE if warm else {}
    return {k: v * scale * share.get(k, 1.0) for k, v in REF_STAGE_S.items()}


def plan_demo(study: Study, quick: bool = False, gptq: tuple[Recipe, ...] | None = None) -> DemoRun:
    """The stages: quick skips the 3-bit variant (for tests and slow machines); `gptq`
    replaces the mode's GPTQ baselines (see demo_recipes)."""
    recipes = demo_recipes(quick, gptq)
    demo = DemoRun([], times_key=_times_key(study, quick, recipes))
    last = _read_times().get(demo.times_key, {})
    guess = first_guess(study, demo.times_key.endswith("warm")) if not last else REF_STAGE_S
    n = len(study.calib_examples)
    demo.stages.append(
        Stage("collect gradients", guess["gradients per example"] * n, study.collect)
    )
    made: list[Recipe] = []
    for recipe in recipes:
        if recipe.ratio:
            expected = guess["TaCQ, cold caches"] + n * guess["TaCQ per example"]
        elif any(shares_reference(t, recipe) for t in made):
            expected = guess["GPTQ, cached reference"]
        else:
            expected = guess["GPTQ, own pass"] + n * guess["GPTQ per example"]
        made.append(recipe)

        def run(p: Progress, recipe: Recipe = recipe) -> Variant:
            v = study.quantize(recipe, p)
            demo.variants.append(v)
            return v

        demo.stages.append(Stage(f"quantize {model_label(recipe.name)}", expected, run))
    per_model = guess["evaluation per model"]
    demo.stages.append(
        Stage(
            "evaluate on held-out",
            per_model * (len(recipes) + 1),
            lambda p: _evaluate(study, demo, p),
        )
    )
    for stage in demo.stages:  # this machine's last measured time wins over the guess
        stage.expected_s = last.get(stage.name, stage.expected_s)
    return demo


def _times_key(study: Study, quick: bool, recipes: list[Recipe]) -> str:
    """Model, examples, mode and its variants, threads, and whether this study's caches are
    filled already: a first demo computes gradients and references, a repeat reads them
    (about 40 % less time), so each kind of run expects what the same kind took last time."""
    from tacq.circuit.gradients import grads_cache_path

    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    mode = ("quick" if quick else "full") + "+" + "+".join(r.key() for r in recipes)
    caches = "warm" if grads_cache_path(study.grads_key()).exists() else "cold"
    return f"{study.lm.fingerprint}|{study.digest()}|{mode}|{threads}|{caches}"


def _times_path():
    return tacq_home() / "demo_times.json"


def _read_times() -> dict:
    try:
        data = json.loads(_times_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or damaged: the first guess stands


def _save_times(demo: DemoRun) -> None:
    """Keep this run's stage times; the next demo of the same model and mode expects them."""
    data = _read_times()
    data[demo.times_key] = {s.name: round(s.elapsed_s, 1) for s in demo.stages}
    write_text_atomic(_times_path(), json.dumps(data, indent=1))


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
        if i == total - 1:
            _save_times(demo)
        yield demo
