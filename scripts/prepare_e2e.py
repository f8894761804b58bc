"""Turn the E2E NLG CSV (columns mr, ref) into prompt/response JSON lines, split by meaning representation.

    python scripts/prepare_e2e.py ../shared/data/e2e_nlg/devset.csv runs/data/e2e

Writes to the output folder:

- `e2e.jsonl`: every row as {"prompt": mr, "response": ref}, the training rows first and the
  validation rows last, so that the data builder's own split (`data.split: tail`,
  `data.val_fraction` = --val_fraction) holds out exactly the validation rows: all references of
  one meaning representation (MR) land on one side, and `dlms eval --references` scores each
  validation MR against all of its references;
- `val.jsonl`: the validation rows alone (for `dlms eval --references runs/data/e2e/val.jsonl`
  on a run trained on other data).

The builder holds out the last round(rows x val_fraction) rows, so the script picks whole MRs
(shuffled by --seed) whose rows add up to exactly that number, and checks the split by reading
the file back as the builder does. Whitespace runs in both columns become one space.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path


def read_rows(path: Path) -> list[tuple[str, str]]:
    """(mr, ref) per CSV row, whitespace collapsed; SystemExit naming the problem otherwise."""
    if not path.is_file():
        raise SystemExit(f"error: E2E file '{path}' does not exist; pass the E2E NLG CSV (e.g. devset.csv)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows = []
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("mr", "ref") if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"error: '{path}' has no column(s) {', '.join(missing)}; pass a CSV with columns mr,ref")
        for record in reader:
            mr, ref = " ".join((record["mr"] or "").split()), " ".join((record["ref"] or "").split())
            if not mr or not ref:
                raise SystemExit(f"error: '{path}' line {reader.line_num} has an empty mr or ref; fill it in or "
                                 "delete the row")
            rows.append((mr, ref))
    return rows


def pick_validation(sizes: list[int], target: int) -> set[int]:
    """Indices of groups whose sizes add up to exactly `target`: the groups in order while they fit,
    then, for a gap left, one more group of the gap's size or one swap that closes it.
    SystemExit when none closes it (another --seed or --val_fraction will)."""
    chosen, total = set(), 0
    for i, size in enumerate(sizes):
        if total + size <= target:
            chosen.add(i)
            total += size
    gap = target - total
    if gap:
        rest = [i for i in range(len(sizes)) if i not in chosen]
        swap = next(((None, r) for r in rest if sizes[r] == gap), None) or next(
            ((c, r) for c in sorted(chosen) for r in rest if sizes[r] - sizes[c] == gap), None)
        if swap is None:
            raise SystemExit(f"error: no set of whole MRs has exactly {target} rows; try another --seed or "
                             "--val_fraction")
        if swap[0] is not None:
            chosen.remove(swap[0])
        chosen.add(swap[1])
    return chosen


def check_split(path: Path, val_fraction: float, val_mrs: set[str]) -> None:
    """Read `path` back as the data builder does and check its validation split is exactly `val_mrs`' rows."""
    from dlms.data.builder import split_mask
    from dlms.data.sources import read_examples

    examples = list(read_examples(str(path), prompt_column="prompt", response_column="response"))
    mask = split_mask(len(examples), val_fraction, "tail", 0)
    wrong = sum((ex["prompt"] in val_mrs) != bool(held) for ex, held in zip(examples, mask))
    if wrong:
        raise SystemExit(f"error: {wrong} rows would land on the wrong side of the split; please report this")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="the E2E NLG CSV (columns mr, ref), e.g. devset.csv")
    parser.add_argument("out", help="folder to write e2e.jsonl and val.jsonl to")
    parser.add_argument("--val_fraction", type=float, default=0.1,
                        help="share of rows held out; the config's data.val_fraction must be the same (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the MRs before the validation ones are picked")
    args = parser.parse_args()
    if not 0 < args.val_fraction < 1:
        raise SystemExit(f"error: --val_fraction must be between 0 and 1, got {args.val_fraction}")
    from dlms.data.builder import split_mask

    rows = read_rows(Path(args.csv))
    refs: dict[str, list[str]] = {}
    for mr, ref in rows:
        refs.setdefault(mr, []).append(ref)
    if len(refs) < 2:
        raise SystemExit(f"error: '{args.csv}' has {len(refs)} distinct mr(s); a split by MR needs at least 2")
    mrs = sorted(refs)
    random.Random(args.seed).shuffle(mrs)
    target = int(split_mask(len(rows), args.val_fraction, "tail", 0).sum())  # the builder's own count
    val = {mrs[i] for i in pick_validation([len(refs[mr]) for mr in mrs], target)}
    ordered = [mr for mr in mrs if mr not in val] + [mr for mr in mrs if mr in val]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = {mr: [json.dumps({"prompt": mr, "response": ref}, ensure_ascii=False) + "\n" for ref in refs[mr]]
             for mr in mrs}
    (out / "e2e.jsonl").write_text("".join(line for mr in ordered for line in lines[mr]), encoding="utf-8")
    (out / "val.jsonl").write_text("".join(line for mr in ordered if mr in val for line in lines[mr]),
                                   encoding="utf-8")
    check_split(out / "e2e.jsonl", args.val_fraction, val)
    longest = max(len(mr) + len(ref) for mr, ref in rows)
    print(json.dumps({"out": str(out), "rows": len(rows), "mrs": len(refs), "val_rows": target, "val_mrs": len(val),
                      "data.val_fraction": args.val_fraction, "data.split": "tail",
                      "longest_mr_plus_ref_chars": longest}))


if __name__ == "__main__":
    main()
