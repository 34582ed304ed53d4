"""How decontamination changed the shipped experts' data: ``axis_data`` with each shipped card's
hyperparameters, before (the ``sft.py`` of git revision REV) and now.

    python bench/decontam_shift.py [--rev 51aeea1] [--data-dir ../shared/data]

Prints per axis: held-out rows still held out, new held-out rows that were training rows of the
shipped expert (they would make a held-out measurement of that expert partly in-sample), whether
the training rows are a subset of the old ones, and the rows removed per source.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", default="51aeea1", help="git revision whose sft.py built the shipped experts' data")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    sys.path.insert(0, str(REPO))
    from alignx.experts import sft as new
    from alignx.experts.config import ExpertConfig

    src = subprocess.run(["git", "show", f"{args.rev}:alignx/experts/sft.py"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_sft.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("old_sft", path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    for axis in ("helpful", "harmless", "honest"):
        card = json.loads((REPO / "assets" / "experts" / axis / "card.json").read_text())
        hp = {k: v for k, v in card["hyperparameters"].items() if k in ExpertConfig.__dataclass_fields__}
        cfg = ExpertConfig(**dict(hp, target_modules=tuple(hp["target_modules"])))
        a, b = old.axis_data(axis, cfg, args.data_dir), new.axis_data(axis, cfg, args.data_dir)
        print(f"{axis:8s} held-out kept {len(set(a.heldout) & set(b.heldout))}/{len(b.heldout)}; "
              f"new held-out rows that trained the shipped expert {len(set(b.heldout) & set(a.train))}; "
              f"train rows {len(b.train)} (before {len(a.train)}), subset of before: {set(b.train) <= set(a.train)}; "
              f"removed {b.removed} (before {a.removed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
