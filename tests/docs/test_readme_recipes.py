"""The README's transformer recipes run as written: every ```python block after a `<!-- recipe -->` marker,
in order, in one namespace (later recipes reuse earlier names, as a reader would)."""

import re
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")

README = Path(__file__).resolve().parents[2] / "README.md"


def recipes() -> list[str]:
    return re.findall(r"<!-- recipe -->\n```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_three_transformer_recipes():
    blocks = recipes()
    assert len(blocks) == 3
    assert "timm:" in blocks[0] and "hf:" in blocks[1] and "resnet56" in blocks[2]


def test_readme_recipes_run():
    namespace: dict = {}
    for block in recipes():
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (our own README)
        assert set(namespace["losses"]) >= {"child", "inherit", "parent"} or set(namespace["losses"]) == {"task", "kd"}
        assert namespace["logits"].shape == (2, 10)
