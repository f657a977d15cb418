"""Accuracy of a comparison grid's parent, as the grid's runs read it, on the grid's validation and test splits
(no training): evidence v3 pair A's parent is the published ResNet-56 as downloaded.

    python benchmarks/parent_accuracy.py configs/evidence_v3_resnet8.yaml
    # writes <grid out_dir>/parent_accuracy.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L

from hkt.compare.spec import load_grid, run_config
from hkt.config import from_dict
from hkt.io import write_atomic
from hkt.training.run import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid")
    args = parser.parse_args()
    grid = load_grid(args.grid)
    method = next(m for m in grid["methods"] if grid["methods"][m].get("parent", {}).get("arch", "") is not None)
    cfg = run_config(grid, method, grid["seeds"][0], params={})
    # the parent as the student's network: a `ce` run of it, evaluated before any training step
    cfg = from_dict({**cfg, "child": {**cfg["parent"]}, "parent": {"arch": None, "weights": None}, "method": {"name": "ce"}})
    data, module = build(cfg)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    val = trainer.validate(module, datamodule=data, verbose=False)[0]["val/acc"]
    test = trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"]
    out = Path(grid["out_dir"]) / "parent_accuracy.json"
    result = {"grid": args.grid, "parent": cfg["child"], "val_acc": val, "test_acc": test, "data": cfg["data"]}
    write_atomic(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
