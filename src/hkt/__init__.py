"""Hereditary Knowledge Transfer (HKT): a small child network inherits block-level knowledge ("genes") from a
frozen, pretrained parent during training, then ships alone.

Layout: ``hkt.core`` (genes, Extraction, Transfer, Genetic Attention, the ETM engine), ``hkt.methods``
(``hkt`` and the baselines ``ce``, ``kd``, ``dkd``, ``dist``, ``fitnet``, ``at``, ``reviewkd``), ``hkt.models``,
``hkt.data``, ``hkt.training`` (Lightning), ``hkt.compare`` (equal-budget comparisons), ``hkt.io`` (atomic files,
locks, safe loading), ``hkt.export`` (safetensors, ONNX, torch.export), ``hkt.cli``.
"""

from hkt.core import Gene, Inheritance
from hkt.export import export
from hkt.methods import AT, CE, DIST, DKD, HKT, KD, FitNet, Method, ReviewKD, build_method
from hkt.models import build_model

__version__ = "0.1.0"
__all__ = [
    "AT",
    "CE",
    "DIST",
    "DKD",
    "HKT",
    "KD",
    "FitNet",
    "Gene",
    "Inheritance",
    "Method",
    "ReviewKD",
    "build_method",
    "build_model",
    "export",
]
