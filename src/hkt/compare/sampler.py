"""Search candidates that depend only on (grid seed, method, trial number), never on the process that draws them.

A sampler that keeps state in the process (Optuna's TPE draws its first trials from a seeded generator) hands a
resumed or second worker the same candidates again. Here trial ``n`` of a method is point ``n`` of one scrambled
Sobol sequence over the method's space, seeded by ``search.seed`` and the method's name: a search killed after any
trial and resumed, or shared by several workers, draws exactly the candidates of one uninterrupted search, and
distinct trial numbers give distinct points (quasi-random, so a few trials already spread over the space).
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from scipy.stats import qmc

from hkt.config import ConfigError
from hkt.io import kill_point

SAMPLERS = {
    "sobol": "scrambled Sobol point n for trial n (seeded per method)",
    "grid": "grid, every point once",
    # kept to rebuild evidence v2's summaries; below its startup count (10) Optuna's TPE draws seeded random points
    "tpe": "TPE below its startup count: seeded random draws",
}


def method_seed(seed: int, method: str) -> int:
    """The sampler seed of one method's study: stable across processes and machines."""
    return int(seed) + zlib.crc32(method.encode())


def candidate(space: dict[str, Any], seed: int, number: int) -> dict[str, Any]:
    """Trial ``number``'s parameters: point ``number`` of the scrambled Sobol sequence seeded by ``seed``, one
    coordinate per parameter (in sorted key order), mapped onto each Optuna distribution."""
    keys = sorted(space)
    engine = qmc.Sobol(len(keys), scramble=True, seed=seed)
    if number:
        engine.fast_forward(number)
    with warnings.catch_warnings():  # "balance properties" advice for batches that are not powers of 2
        warnings.simplefilter("ignore")
        point = engine.random(1)[0]
    params: dict[str, Any] = {}
    for key, u in zip(keys, point):
        dist = space[key]
        if isinstance(dist, CategoricalDistribution):
            params[key] = dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
        elif isinstance(dist, IntDistribution):
            lo, hi = (math.log(dist.low), math.log(dist.high + 1)) if dist.log else (dist.low, dist.high + 1)
            value = lo + u * (hi - lo)
            params[key] = min(int(math.exp(value) if dist.log else value), dist.high)
        else:
            lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
            value = lo + u * (hi - lo)
            params[key] = min(max(math.exp(value) if dist.log else value, dist.low), dist.high)
    return params


def trial_indexed_sobol(space: dict[str, Any], seed: int) -> Any:
    """An Optuna sampler whose trial ``n`` gets :func:`candidate` ``(space, seed, n)``."""

    class TrialIndexedSobol(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return dict(space)

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            kill_point("search:params")  # the trial exists in the storage, RUNNING, without its parameters
            return candidate(space, seed, trial.number)

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            raise KeyError(f"parameter {name!r} is not in the search space {sorted(space)}")

    return TrialIndexedSobol()


def refusing_sampler(reason: str) -> Any:
    """A sampler for studies that may only replay enqueued or recorded trials (``tpe``): drawing fails."""

    class Refuse(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            raise ConfigError(reason)

    return Refuse()
