"""Turn the Yelp sentiment sentences (one file per label) into one shuffled JSON-lines file.

    python scripts/prepare_yelp_sentiment.py ../shared/data/yelp_sentiment runs/data/yelp_sentiment.jsonl

Each line is {"text": ..., "sentiment": "negative" | "positive"}; `.0` files are negative,
`.1` files positive. Rows are shuffled by --seed, so "the last 10%" (data.val_fraction 0.1,
split: tail) is the random 90/10 split the data's README asks for, the same for every run.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

LABELS = {"0": "negative", "1": "positive"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder holding sentiment.*.0 and sentiment.*.1")
    parser.add_argument("out", help="JSON-lines file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for path in sorted(Path(args.folder).glob("sentiment.*.[01]")):
        label = LABELS[path.suffix[1:]]
        rows += [{"text": line.strip(), "sentiment": label}
                 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"error: no sentiment.*.0 / sentiment.*.1 files in '{args.folder}'")
    random.Random(args.seed).shuffle(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
