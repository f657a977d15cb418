"""Evidence v4's cell A carries v3 pair A's records unchanged, and both v4 grids load."""

from pathlib import Path

from hkt.compare.records import is_committed
from hkt.compare.spec import load_grid, run_config

ROOT = Path(__file__).resolve().parents[2]
V3, V4 = ROOT / "benchmarks/results/evidence_v3_resnet8", ROOT / "benchmarks/results/evidence_v4_resnet8"


def test_cell_a_carries_v3_pair_a_records_byte_for_byte():
    v3 = sorted(p.relative_to(V3) for p in [*V3.glob("runs/*/*.json"), *V3.glob("search/*/*.json")])
    assert len(v3) == 96
    for rel in v3:
        assert (V4 / rel).read_bytes() == (V3 / rel).read_bytes(), rel


def test_v4_grids_load_and_v3_run_configs_are_unchanged():
    grid = load_grid(ROOT / "configs/evidence_v4_resnet8.yaml")
    for method in ("ce", "kd", "kd_ls", "dkd", "dist", "hkt"):
        for seed in grid["seeds"]:
            cfg = run_config(grid, method, seed, check_refs=False)
            assert is_committed(cfg, V4 / "runs" / method / f"seed{seed}.json")
    vit = load_grid(ROOT / "configs/evidence_v4_vit.yaml")
    assert vit["methods"]["deit"]["method"] == {"name": "deit", "distillation": "hard"}
    assert vit["common"]["parent"] == grid["common"]["parent"] == {"arch": "resnet56", "weights": "resnet56-cifar10"}
