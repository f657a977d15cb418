"""Other people's models by name: ``timm:<name>`` and ``hf:<class>[:<config>]`` (optional extras
``pip install hkt[timm,hf]``). Built from configs, never downloaded unless asked for: ``weights: timm:pretrained``
(timm's hub, hash-checked by it), a local Hugging Face folder holding ``model.safetensors``, or a hub id
``hf:<class>:<org>/<name>`` (its ``model.safetensors``, from the hub or its cache; never a pickle).

A pretrained model with another class count gets a fresh head for the data's classes (timm's ``num_classes``,
transformers' ``ignore_mismatched_sizes``; a local timm checkpoint: ``hkt.models.weights.load_weights(head=...)``),
named in the log; any other weight missing from the checkpoint is an error.

``options`` are the architecture's own keyword arguments: ``timm.create_model`` arguments (``img_size``,
``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ...) or Hugging Face config attributes (``image_size``,
``hidden_size``, ``num_hidden_layers``, ...). A Hugging Face classifier returns an ``ImageClassifierOutput``; the
methods read its ``.logits`` (``hkt.core.outputs``), and ``export_child`` returns the model as built here.
"""

from __future__ import annotations

import difflib
import importlib
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger("hkt")


def require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed; install it with `pip install hkt[{extra}]` (or `pip install {module}`)") from None


def _refuse_data_options(model: str, options: dict[str, Any], owned: dict[str, int]) -> None:
    """The head and the stem are sized from the data (classes, channels): an option that sizes them too would be
    overwritten silently (Hugging Face) or clash (timm), so it is refused, naming the value the data gives."""
    clash = {k: v for k, v in options.items() if k in owned or k in ("id2label", "label2id")}
    if clash:
        given = ", ".join(f"{k}={v!r}" for k, v in clash.items())
        sized = ", ".join(f"{k}={v}" for k, v in owned.items())
        raise ValueError(
            f"{model}: options {given} size what the data sizes ({sized}, from the dataset; data.num_classes overrides "
            "the class count); remove them from the options"
        )


def timm_model(name: str, num_classes: int, in_channels: int, weights: str | None, options: dict[str, Any]) -> nn.Module:
    """``timm.create_model(name, num_classes, in_chans, **options)``; ``weights='timm:pretrained'`` downloads timm's."""
    timm = require("timm", "timm")
    _refuse_data_options(f"timm:{name}", options, {"num_classes": num_classes, "in_chans": in_channels})
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        raise ValueError(f"timm has no model {name!r}" + (f"; close names: {', '.join(close)}" if close else "; see timm.list_models()"))
    pretrained = weights == "timm:pretrained"
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **options)
    except TypeError as e:
        raise ValueError(f"timm:{name} does not take options {sorted(options)}: {e}") from None


def _hf_config(cls: Any, source: str | None, options: dict[str, Any], num_classes: int, in_channels: int) -> Any:
    config_class = cls.config_class
    if source is None:
        config = config_class()
    elif Path(source).is_file():
        config = config_class.from_dict(json.loads(Path(source).read_text()))
    else:  # a local folder with config.json, or a hub id (online only)
        config = config_class.from_pretrained(source)
    unknown = [k for k in options if not hasattr(config, k)]
    if unknown:
        raise ValueError(f"{config_class.__name__} has no attribute(s) {unknown}; see its documentation for the options")
    for key, value in options.items():
        setattr(config, key, value)
    config.num_labels = num_classes
    if hasattr(config, "num_channels"):
        config.num_channels = in_channels
    return config


def hf_model(spec: str, num_classes: int, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """``<class>[:<config>]``: a ``transformers`` model class (e.g. ``ViTForImageClassification``) built from its
    default config, a JSON file, a local folder or a hub id, with ``options`` set on the config. A local folder
    with ``model.safetensors``, or a hub id, also loads its weights (safetensors only: nothing is unpickled); a hub id
    that is neither reachable nor cached is named."""
    transformers = require("transformers", "hf")
    name, _, source = spec.partition(":")
    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        close = difflib.get_close_matches(name, [n for n in dir(transformers) if n.endswith(("Model", "ForImageClassification"))], n=5)
        raise ValueError(f"transformers has no model class {name!r}" + (f"; close names: {', '.join(close)}" if close else ""))
    _refuse_data_options(f"hf:{name}", options, {"num_labels": num_classes, "num_channels": in_channels})
    local = bool(source) and Path(source).exists()
    try:
        config = _hf_config(cls, source or None, options, num_classes, in_channels)
        if not source or (local and not (Path(source) / "model.safetensors").is_file()):
            return cls(config)  # a config alone: random initialisation, as asked
        model, info = cls.from_pretrained(
            source, config=config, use_safetensors=True, ignore_mismatched_sizes=True, output_loading_info=True
        )
    except OSError as e:  # not reachable, not cached, no safetensors file
        raise ValueError(
            f"hf:{name}:{source}: cannot load it ({str(e).splitlines()[0]}). Give a local folder holding config.json and "
            "model.safetensors, or a hub id that is reachable (or already in the Hugging Face cache, with HF_HUB_OFFLINE=1)"
        ) from e
    _check_loaded(f"hf:{name}:{source}", info, num_classes)
    return model


def _check_loaded(what: str, info: dict[str, Any], num_classes: int) -> None:
    """Every weight of the model came from the checkpoint, except a classifier head replaced for another class
    count (a mismatched weight whose first dimension is the class count, logged); any other weight left at random
    initialisation (missing, or mismatched: an option changed its shape) is an error, naming it."""
    mismatched = {k: tuple(new) for k, _old, new in info.get("mismatched_keys", [])}
    replaced = {k for k, shape in mismatched.items() if shape and shape[0] == num_classes}
    missing = sorted((set(info.get("missing_keys", [])) | set(mismatched)) - replaced)
    if missing:
        raise ValueError(
            f"{what}: the checkpoint lacks {len(missing)} weight(s) of the model ({', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}); they would train from random values. Check the model class and source"
        )
    if replaced:
        log.info("%s: head replaced for this dataset's classes (%s start from random values)", what, ", ".join(sorted(replaced)))
