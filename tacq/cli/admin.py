"""Commands about the machine: plan a run, list or clear the caches."""

from __future__ import annotations


def cmd_plan(args) -> None:
    from tacq.study.plan import RunSettings, plan_here

    settings = RunSettings(
        args.examples,
        args.max_length,
        args.batch_size,
        args.bits,
        accum_bytes=2 if args.accum_bf16 else 4,
        accum_stats=3 if args.extra_stats else 1,
        accum_on_host=args.accum_on_host,
    )
    auto = not (args.accum_bf16 or args.accum_on_host)  # where a collection would put them
    plan = plan_here(
        args.model, settings, args.device, args.tflops, args.memory_gb, auto, args.host_memory_gb
    )
    print(plan.text())
    plan.check()
    print("fits.")


def cmd_cache(args) -> None:
    import json

    from tacq.cache import CAPPED, tacq_home
    from tacq.cache_admin import cache_cap_bytes, clear, human_bytes, usage

    if args.clear:
        n, freed, kept = clear(CAPPED if args.clear == "all" else (args.clear,))
        print(f"removed {n} file{'s' * (n != 1)}: freed {freed:,} bytes ({human_bytes(freed)})")
        if kept:
            print(f"{kept} in use by this process kept")
        return
    listed, cap = usage(), cache_cap_bytes()
    if args.json:
        out = {k: {"files": n, "bytes": b} for k, (n, b) in listed.items()}
        print(json.dumps({**out, "cap_bytes": cap, "folder": str(tacq_home())}))
        return
    for name, (n, b) in listed.items():
        files = f"{n} file" + "s" * (n != 1)
        print(f"{name:<6} {files:>11} {human_bytes(b):>9}  {tacq_home() / name}")
    print(
        f"cap {human_bytes(cap)} for both (TACQ_CACHE_GB, else the smaller of 20 GB and a "
        "quarter of the free disk); least recently used files go first"
    )
