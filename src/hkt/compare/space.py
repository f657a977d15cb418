"""A search space: ``{dotted config key: spec}`` per method, each spec ``{low, high[, log][, int]}`` or ``{choices: [...]}``,
read as Optuna distributions."""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hkt.config import ConfigError

SEARCH_KEYS = {"trials", "sampler", "tuning_seeds", "seed", "storage", "space"}


def _spec_error(method: str, key: str, spec: Any) -> ConfigError:
    return ConfigError(
        f"search space of method {method!r}: {key}: {spec!r} must be {{low: L, high: H}} (optionally log: true, int: true) "
        "or {choices: [...]}"
    )


def distribution(method: str, key: str, spec: Any) -> Any:
    """Optuna distribution of one parameter spec."""
    if not isinstance(spec, dict):
        raise _spec_error(method, key, spec)
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise _spec_error(method, key, spec)
        return CategoricalDistribution(spec["choices"])
    if not {"low", "high"} <= set(spec) <= {"low", "high", "log", "int"}:
        raise _spec_error(method, key, spec)
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high or (log and low <= 0):
        raise ConfigError(f"search space of method {method!r}: {key} needs numbers low < high (and low > 0 with log), got {spec!r}")
    return IntDistribution(int(low), int(high), log=log) if spec.get("int") else FloatDistribution(float(low), float(high), log=log)


def spaces(grid: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: {dotted key: spec}}``: the shared space merged with each method's own."""
    shared = grid["search"].get("space") or {}
    return {m: {**shared, **((spec or {}).get("space") or {})} for m, spec in grid["methods"].items()}
