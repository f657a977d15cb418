"""One-off correction of evidence v2 (issue 22): CIFAR-10 budget 1's ``kd`` search replayed its first two TPE draws
as trials 4 and 5 (a resumed process re-seeded the sampler), so ``kd`` had 4 distinct candidates where every other
method had 6. This replays each method's seeded TPE in one process, as an uninterrupted search would have drawn it,
checks that it reproduces every committed candidate except ``kd``'s trials 4 and 5, trains those two (prepare runs
first, as the grid does), replaces their records, and reruns ``kd``'s final seeds only if its chosen setting changes.

    OMP_NUM_THREADS=2 python benchmarks/fix_v2_kd_replay.py
"""

import json
import zlib

import optuna

from hkt.compare import search
from hkt.compare.grid import _publish, load_grid, run_config, run_grid
from hkt.compare.summary import summarize
from hkt.training.run import fit_or_resume

GRID = "configs/evidence_v2_cifar10_b1.yaml"


def uninterrupted_draws(grid, method, n):
    dists = {k: search.distribution(method, k, v) for k, v in search.spaces(grid)[method].items()}
    seed = int(grid["search"].get("seed", 0)) + zlib.crc32(method.encode())  # as the v2 searches seeded TPE
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="maximize")
    draws = []
    for _ in range(n):
        trial = study.ask(dists)
        draws.append(trial.params)
        study.tell(trial, 0.0)  # below TPE's 10 startup trials the values are never read
    return draws


def main():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = load_grid(GRID)
    trials = grid["search"]["trials"]
    fixes = {}
    for method in grid["methods"]:
        draws = uninterrupted_draws(grid, method, trials)
        committed = [r["params"] for r in search.trial_records(grid["out_dir"], method)]
        wrong = [i for i in range(trials) if draws[i] != committed[i]]
        print(f"{method}: committed trials that differ from an uninterrupted search: {wrong}", flush=True)
        if wrong:
            fixes[method] = {i: draws[i] for i in wrong}
    assert list(fixes) == ["kd"] and list(fixes["kd"]) == [4, 5], fixes
    before = search.chosen(grid)["kd"]
    for name in grid["prepare"]:
        _publish(fit_or_resume(run_config(grid, name, None)), __import__("pathlib").Path(grid["out_dir"]) / "prepare" / f"{name}.json")
    for number, params in fixes["kd"].items():
        print(f"kd trial {number}: {params}", flush=True)
        mean, values, wall = search._objective(grid, "kd", number, params)
        search._publish_trial(grid, "kd", number, params, values, mean, wall)
    after = search.chosen(grid)["kd"]
    print(json.dumps({"chosen_before": before, "chosen_after": after}), flush=True)
    if after != before:
        run_grid(grid, only=["kd"])
    summarize(grid)


if __name__ == "__main__":
    main()
