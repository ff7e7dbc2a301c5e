"""Peak memory and time of reading a 20 MB upload of each shape, as the app reads it.

Each shape runs in a fresh process (the peak RSS of a process never goes down), which
reads the bytes, decodes and parses them exactly as the Examples screen does. Target: at
most 500 MB above the process's baseline for any shape.

    python bench/upload_memory.py
Writes bench/results/upload_memory.json.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, no_options, write_result

SIZE = 20 * 2**20 - 1024
TARGET_MB = 500


def shapes() -> dict[str, bytes]:
    row = b'{"prompt": "a", "answer": "b"}\n'
    return {
        "10M one-letter lines (.txt)": b"a\n" * (SIZE // 2),
        "tiny CSV rows (.csv)": b"prompt,answer\n" + b"a,b\n" * (SIZE // 4 - 4),
        "JSONL rows (.jsonl)": row * (SIZE // len(row)),
        "one JSON array of 4M strings (.json)": b"[" + b'"a",' * (SIZE // 4 - 1) + b'"a"]',
        "one 20 MB line (.txt)": b"x" * SIZE,
        "random bytes (.bin)": bytes(range(256)) * (SIZE // 256),
    }


def measure_one(path: str) -> dict:
    """In this (fresh) process: baseline RSS, then read + decode + parse the file."""
    sys.path.insert(0, str(ROOT))
    from tacq.data.reading import decode_upload, guess_format, parse_examples
    from tacq.errors import TacqError

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    outcome = ""
    try:
        text = decode_upload(Path(path).read_bytes())
        result = parse_examples(text, guess_format(path, text))
        outcome = f"{len(result.examples)} examples, {len(result.problems)} problems"
    except TacqError as e:
        outcome = f"refused: {str(e)[:60]}"
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"extra_mb": peak - base, "seconds": seconds, "outcome": outcome}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure_one(sys.argv[2])))
        return
    no_options(__doc__)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in shapes().items():
            suffix = name.rsplit("(", 1)[1].rstrip(")")
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[name] = r
            print(f"{name:<40} +{r['extra_mb']:6.0f} MB  {r['seconds']:5.2f} s  {r['outcome']}")
    worst = max(r["extra_mb"] for r in rows.values())
    print(f"worst {worst:.0f} MB extra (target <= {TARGET_MB})")
    write_result(
        "upload_memory",
        {"upload_bytes": SIZE, "shapes": rows, "worst_extra_mb": worst, "target_mb": TARGET_MB},
    )


if __name__ == "__main__":
    main()
