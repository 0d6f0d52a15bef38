"""``attnas.registry.Registry``: the one registry behind ops, backbones, data, controller and
dispatch, and the public names each package keeps on top of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attnas.registry import Registry


def test_register_get_names_and_duplicates() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("b_one")
    def one() -> int:
        return 1

    reg.add("a_two", 2)
    assert reg.get("b_one") is one and reg.get("a_two") == 2
    assert reg.names() == ["a_two", "b_one"] and reg.names("b_*") == ["b_one"]
    assert "a_two" in reg and len(reg) == 2 and list(reg) == ["a_two", "b_one"]
    with pytest.raises(ValueError, match=r"widget 'b_one' is already registered \(by .*one\)"):
        reg.add("b_one", 3)
    with pytest.raises(KeyError, match=r"unknown widget 'nope'; registered: \['a_two', 'b_one'\]"):
        reg.get("nope")
    assert reg.remove("a_two") == 2 and reg.names() == ["b_one"]


def test_every_package_registry_is_one_registry() -> None:
    """The five hand-rolled dict registries are gone: each package holds a ``Registry``."""
    from attnas.backbones import registry as backbones
    from attnas.controller import base as controller
    from attnas.data import registry as data
    from attnas.dispatch import base as dispatch
    from attnas.ops import registry as ops

    tables = [ops._OPS, backbones._BACKBONES, data._DATASETS, controller._SEARCHERS,
              dispatch._DISPATCHERS]  # fmt: skip
    assert all(isinstance(t, Registry) for t in tables)
    assert [t.kind for t in tables] == ["op type", "backbone", "dataset", "searcher", "dispatcher"]


def test_public_names_keep_working() -> None:
    from attnas.backbones import list_backbones
    from attnas.controller import list_searchers
    from attnas.data import list_datasets, register_dataset
    from attnas.dispatch import list_dispatchers
    from attnas.ops import list_ops

    assert {"map", "dot"} <= set(list_ops())
    assert list_backbones("*_tiny") == ["i3d_tiny", "r3d_tiny", "s3d_tiny"]
    assert {"gpb", "random", "evolution"} <= set(list_searchers())
    assert {"local", "ray"} <= set(list_dispatchers())
    with pytest.raises(ValueError, match="dataset 'video_folder' is already registered"):
        register_dataset("video_folder")(lambda **kw: None)
    assert "video_folder" in list_datasets()


def test_registry_module_imports_nothing_heavy() -> None:
    code = "import sys, attnas.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
