"""Grow the bundled task sets: a dev split and >= 150 held-out items per task.

Why a script: the items are data (assets/tasks/items/*.txt, one "query = answer" per
line, or generated for the number, date and record tasks); turning them into 4-shot
prompts whose demonstrations come only from calibration items is code, and rerunning
it gives the same files (fixed seeds). The calibration rows and the first held-out rows
of the older tasks are kept byte for byte, so calibration digests, caches and earlier
measurements stay valid; new items that share a word with the calibration items are
left out (reported), and no query occurs in two splits.

    python scripts/build_tasks.py          # rewrite assets/tasks/*.jsonl
    python scripts/build_tasks.py --check  # exit 1 if a file would change
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

TASKS = Path(__file__).resolve().parent.parent / "assets" / "tasks"
ITEMS = TASKS / "items"
FRESH = TASKS / "fresh"  # never tuned on: no preset, lever or demo pick reads these
HELDOUT = 160  # held-out items per task where the items allow (at least 150)
DEV = 48  # dev items per task where the items allow
SHOTS = 4
Item = tuple[str, str]  # (query, answer) without the leading space


# ------------------------------------------------------------ formats of one line


def arrow(q: str, a: str | None) -> str:
    return f"{q} -> {a}" if a is not None else f"{q} ->"


def capital(q: str, a: str | None) -> str:
    return f"The capital of {q} is {a}." if a is not None else f"The capital of {q} is"


def sequence(q: str, a: str | None) -> str:
    return f"{q} {a}" if a is not None else q


def record(q: str, a: str | None) -> str:
    return f"{q} {a}" if a is not None else q


FORMATS: dict[str, Callable[[str, str | None], str]] = {
    "antonyms": arrow,
    "plurals": arrow,
    "past_tense": arrow,
    "capitals": capital,
    "next_number": sequence,
    "dates": arrow,
    "records": record,
    "first_letter": arrow,
    "addition": lambda q, a: f"{q} = {a}" if a is not None else f"{q} =",
    "last_word": arrow,
}


def query_of(task: str, prompt: str) -> str:
    """The item a prompt asks about (its last line without the format around it)."""
    last = prompt.splitlines()[-1]
    if task == "capitals":
        return last.removeprefix("The capital of ").removesuffix(" is")
    return last.removesuffix(" ->")


def row(task: str, item: Item, demos: list[Item], split: str) -> dict:
    fmt = FORMATS[task]
    lines = [fmt(q, a) for q, a in demos] + [fmt(item[0], None)]
    return {"prompt": "\n".join(lines), "answer": f" {item[1]}", "split": split}


def rows_for(task: str, items: list[Item], pool: list[Item], split: str, seed: int) -> list:
    """One prompt per item, its SHOTS demonstrations drawn from the calibration pool."""
    rng = random.Random(f"{task}-{split}-{seed}")
    out = []
    for item in items:
        demos = rng.sample([p for p in pool if p[0] != item[0]], SHOTS)
        out.append(row(task, item, demos, split))
    return out


# ------------------------------------------------------------ items


def read_items(task: str) -> list[Item]:
    """Items of a file: 'query = answer' lines; '#' lines are comments."""
    items = []
    for n, line in enumerate((ITEMS / f"{task}.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        q, sep, a = line.partition(" = ")
        if not sep or not q.strip() or not a.strip():
            raise SystemExit(f"{task}.txt line {n}: expected 'query = answer', got {line!r}")
        items.append((q.strip(), a.strip()))
    return items


def words(items: list[Item]) -> set[str]:
    return {w.lower() for q, a in items for w in re.findall(r"[\w'-]+", f"{q} {a}")}


def fresh(task: str, new: list[Item], used: list[Item]) -> list[Item]:
    """New items sharing no word (word tasks) or query (others) with the used ones."""
    taken_words = words(used) if task in ("antonyms", "plurals", "past_tense") else set()
    taken_queries = {q.lower() for q, _ in used}
    out, dropped = [], []
    for q, a in new:
        clash = q.lower() in taken_queries or (words([(q, a)]) & taken_words)
        (dropped if clash else out).append((q, a))
        taken_queries.add(q.lower())
        if task == "antonyms":  # a word of one new pair is not reused by another
            taken_words |= words([(q, a)])
    if dropped:
        print(
            f"{task}: {len(dropped)} item(s) left out (shared with earlier items): "
            + ", ".join(f"{q}={a}" for q, a in dropped[:12]),
            file=sys.stderr,
        )
    return out


def grow(task: str, rows: list[dict], new: list[Item]) -> list[dict]:
    """Keep calibration and earlier held-out rows; add dev and held-out rows for `new`."""
    first_dev = next((i for i, r in enumerate(rows) if r["split"] == "dev"), len(rows))
    kept = rows[:first_dev]  # the rows from before this script: it writes dev rows after them
    calib = [
        (query_of(task, r["prompt"]), r["answer"].strip()) for r in kept if r["split"] == "calib"
    ]
    earlier = [
        (query_of(task, r["prompt"]), r["answer"].strip()) for r in kept if r["split"] == "heldout"
    ]
    new = fresh(task, new, calib + earlier)
    random.Random(f"{task}-order").shuffle(new)
    n_held = min(HELDOUT - len(earlier), len(new) - min(DEV, len(new) // 5))
    held, dev = new[:n_held], new[n_held : n_held + DEV]
    return kept + rows_for(task, dev, calib, "dev", 0) + rows_for(task, held, calib, "heldout", 0)


# ------------------------------------------------------------ generated items


def number_items() -> list[Item]:
    """Counting sequences: start 1-99, step 1, 2, 3, 5 or 10 (those asked before drop out)."""
    rng = random.Random("next_number-items")
    items = [
        (", ".join(str(s + k * d) for k in range(SHOTS)) + ",", str(s + SHOTS * d))
        for d in (1, 2, 3, 5, 10)
        for s in range(1, 100)
    ]
    rng.shuffle(items)
    return items


MONTHS = (
    "January February March April May June July August September October November December"
).split()


def date_items(n: int) -> list[Item]:
    """'28 June 1954' -> 'June 28, 1954': a reformatting, not a lookup; no date twice."""
    rng = random.Random("dates-items")
    seen: dict[str, str] = {}
    while len(seen) < n:
        y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        seen[f"{d} {MONTHS[m - 1]} {y}"] = f"{MONTHS[m - 1]} {d}, {y}"
    return list(seen.items())


FIRST = (
    "Maria John Aisha Kenji Lucas Emma Omar Sofia Ivan Priya Diego Hannah Chen Fatima Noah "
    "Elena Samuel Yuki Carlos Nina Amir Grace Tomas Leila Oscar Mei Pavel Rosa Felix Zara"
).split()
LAST = (
    "Lopez Smith Khan Tanaka Silva Brown Haddad Rossi Petrov Patel Garcia Weber Wang Ali "
    "Miller Novak Okafor Sato Diaz Berg Costa Moreau Kowalski Nguyen Reyes Fischer Kim Dubois"
).split()
CITIES = (
    "Lima Oslo Cairo Dublin Lagos Quito Perth Kyoto Porto Milan Denver Austin Boston Seattle "
    "Dallas Madrid Vienna Prague Warsaw Athens Nairobi Seoul Lyon Munich Toronto Manila"
).split()
JOBS = "teacher nurse pilot baker farmer lawyer chef dentist plumber artist driver tailor".split()
FIELDS = ("city", "job", "age", "name")


def record_items(n: int) -> list[Item]:
    """A record in shuffled field order and the field asked for: reading, not recalling.

    The field asked is part of the query, so each prompt's demonstrations ask the same
    field (records_rows); no record occurs twice.
    """
    rng = random.Random("records-items")
    seen: dict[str, str] = {}
    while len(seen) < n:
        rec = {
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "age": str(rng.randint(18, 80)),
            "job": rng.choice(JOBS),
            "city": rng.choice(CITIES),
        }
        keys = list(rec)
        rng.shuffle(keys)
        field = FIELDS[len(seen) % len(FIELDS)]
        text = "{" + ", ".join(f"{k}: {rec[k]}" for k in keys) + "} " + field + ":"
        seen[text] = rec[field]
    return list(seen.items())


def new_task(task: str, items: list[Item], n_calib: int = 66) -> list[dict]:
    """calib / dev / held-out rows of a generated task; records' demos ask the same field."""
    calib, dev, held = items[:n_calib], items[n_calib : n_calib + DEV], items[n_calib + DEV :]
    out = []
    for split, part in (("calib", calib), ("dev", dev), ("heldout", held)):
        if task != "records":
            out += rows_for(task, part, calib, split, 0)
            continue
        for field in FIELDS:
            pool = [i for i in calib if i[0].endswith("} " + field + ":")]
            mine = [i for i in part if i[0].endswith("} " + field + ":")]
            out += rows_for(task, mine, pool, split, FIELDS.index(field))
    order = {"calib": 0, "dev": 1, "heldout": 2}
    return sorted(out, key=lambda r: order[r["split"]])  # stable: each split keeps its order


# ------------------------------------------------------------ fresh tasks (never tuned on)


def word_pool() -> list[str]:
    """Distinct lower-case words of 4-8 letters from the word tasks' items, in a fixed
    shuffled order (the fresh tasks ask something else about them)."""
    found = set()
    for task in ("antonyms", "plurals", "past_tense"):
        found |= {w for w in words(read_items(task)) if w.isalpha() and 4 <= len(w) <= 8}
    pool = sorted(found)
    random.Random("fresh-words").shuffle(pool)
    return pool


def first_letter_items(n: int) -> list[Item]:
    """'garden' -> 'g': spelling inside a word's token, no lookup."""
    return [(w, w[0]) for w in word_pool()[:n]]


def addition_items() -> list[Item]:
    """'17 + 5' -> '22': one- or two-digit plus one-digit, every pair once."""
    items = [(f"{a} + {b}", str(a + b)) for a in range(1, 40) for b in range(1, 10)]
    random.Random("addition-items").shuffle(items)
    return items


def last_word_items(n: int) -> list[Item]:
    """'lamp river stone cloud' -> 'cloud': copying from the context, no lookup."""
    rng = random.Random("last_word-items")
    pool = word_pool()
    seen: dict[str, str] = {}
    while len(seen) < n:
        ws = rng.sample(pool, 4)
        seen[" ".join(ws)] = ws[-1]
    return list(seen.items())


def fresh_built() -> dict[str, list[dict]]:
    n = 66 + DEV + HELDOUT
    return {
        "first_letter": new_task("first_letter", first_letter_items(n)),
        "addition": new_task("addition", addition_items()[:n]),
        "last_word": new_task("last_word", last_word_items(n)),
    }


# ------------------------------------------------------------ files


def read_rows(task: str) -> list[dict]:
    path = TASKS / f"{task}.jsonl"
    return (
        [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    )


def built() -> dict[str, list[dict]]:
    out = {}
    for task in ("antonyms", "plurals", "past_tense", "capitals"):
        out[task] = grow(task, read_rows(task), read_items(task))
    out["next_number"] = grow("next_number", read_rows("next_number"), number_items())
    out["dates"] = new_task("dates", date_items(66 + DEV + HELDOUT))
    out["records"] = new_task("records", record_items(66 + DEV + HELDOUT))
    return out


def text_of(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    args = ap.parse_args()
    changed = []
    FRESH.mkdir(exist_ok=True)
    files = [(TASKS, built()), (FRESH, fresh_built())]
    for task, rows, folder in ((t, r, folder) for folder, b in files for t, r in b.items()):
        path, text = folder / f"{task}.jsonl", text_of(rows)
        counts = {s: sum(r["split"] == s for r in rows) for s in ("calib", "dev", "heldout")}
        print(f"{task:12s} {counts}")
        if not path.exists() or path.read_text() != text:
            changed.append(task)
            if not args.check:
                path.write_text(text)
    if args.check and changed:
        print(f"would change: {', '.join(changed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
