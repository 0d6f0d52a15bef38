"""The README's Python snippets run as written (in a temporary working directory)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_snippets() -> None:
    assert len(_snippets()) >= 2


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippets_run(index: int, tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    # snippets build on one another (the searcher example uses the space from the first)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for code in _snippets()[: index + 1]:
            exec(compile(code, f"README.md snippet {index}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    if index == 0:
        assert tuple(namespace["logits"].shape) == (2, 10)  # type: ignore[union-attr]
        assert (tmp_path / "cell.yaml").is_file()
