"""Find blocks ("genes") by dotted module path, with errors that suggest the closest valid paths."""

from __future__ import annotations

import difflib

from torch import nn


def module_at(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    """Return ``model``'s submodule at dotted ``path`` (``"layer3"``, ``"features.12"``, ``"avgpool"``).

    Raises ``KeyError`` naming the closest valid paths when ``path`` does not exist.
    """
    modules = dict(model.named_modules())
    if path in modules and path != "":
        return modules[path]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.4) or names[:10]
    raise KeyError(
        f"{role} ({type(model).__name__}) has no module at path {path!r}. "
        f"Closest valid paths: {', '.join(close)}. "
        "List them all with `[n for n, _ in model.named_modules()]`."
    )
