"""Every config group option and experiment file composes with Hydra's compose API and converts
to the library's dataclasses; the schemas mirror the library's fields and defaults; typos and
wrong types fail at composition with messages naming the key."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, MissingMandatoryValue, ValidationError

from attnas.cli import CONFIG_DIR, schema
from attnas.space import load_space
from attnas.supergraph.search import DifferentiableSearchConfig
from attnas.train import TrainConfig, TrialSpec

GROUPS = ("searcher", "space", "backbone", "data", "trainer", "dispatch", "tracking")
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# data options that need a path the user supplies
_PATHS = {
    "video_folder": ["data.train_kwargs.root=/x/train", "data.val_kwargs.root=/x/val"],
    "video_csv": ["data.train_kwargs.csv_path=/x/t.csv", "data.val_kwargs.csv_path=/x/v.csv"],
}


@pytest.fixture(scope="module")
def hydra_ctx() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _check_search_config(cfg, build: bool = True) -> None:
    """Convert a composed search config into every library object it describes (``build``:
    also construct the searcher, the slow part)."""
    space = schema.load_space_from(cfg.space)
    spec = schema.to_trial_spec(cfg, op_channel_ratio=space.op_channel_ratio)
    assert isinstance(spec, TrialSpec)
    assert TrialSpec.from_dict(spec.to_dict()) == spec
    assert spec.train.seed == cfg.seed
    if cfg.searcher.name == "differentiable":
        assert isinstance(schema.to_search_config(cfg.searcher), DifferentiableSearchConfig)
    elif build:
        from attnas.controller import build_searcher

        searcher = build_searcher(
            cfg.searcher.name, space, seed=0, **schema.searcher_kwargs(cfg.searcher)
        )
        assert hasattr(searcher, "suggest")
    from attnas.dispatch import list_dispatchers

    assert cfg.dispatch.name in list_dispatchers()
    from attnas.backbones import list_backbones
    from attnas.data import list_datasets

    assert spec.backbone in list_backbones() and spec.dataset in list_datasets()


def test_config_dir_is_the_repository_conf_folder() -> None:
    assert Path(schema.__file__).resolve().parents[2] / "conf" == CONFIG_DIR
    assert (CONFIG_DIR / "search.yaml").is_file()


def test_every_group_has_the_documented_options() -> None:
    assert _options("searcher") == ["differentiable", "evolution", "gpb", "random"]
    assert _options("space") == ["attention_nas", "attention_nas_plus", "nonlocal"]
    assert _options("backbone") == ["i3d", "i3d_r50", "i3d_tiny", "r3d_tiny", "s3d", "s3d_tiny"]
    assert _options("data") == ["moving_digits", "video_csv", "video_folder", "weizmann4"]
    assert _options("trainer") == ["cpu", "gpu"]
    assert _options("dispatch") == ["local", "ray"]
    assert _options("tracking") == ["jsonl", "none", "wandb"]
    assert {
        "smoke",
        "cpu_demo",
        "kinetics600_i3d_differentiable",
        "kinetics600_i3d_gpb",
        "mit_s3d_differentiable",
        "mit_s3d_gpb",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize(
    "group, option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda x: str(x)
)
def test_every_group_option_composes_and_converts(hydra_ctx, group: str, option: str) -> None:
    overrides = [f"{group}={option}", *(_PATHS.get(option, []) if group == "data" else [])]
    cfg = compose("search", overrides=overrides)
    build = group == "searcher"
    key = {"space": "file", "trainer": None}.get(group, "name")
    if key is not None:
        assert cfg[group][key] == option
    _check_search_config(cfg, build=build)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_converts(hydra_ctx, experiment: str) -> None:
    cfg = compose("search", overrides=[f"experiment={experiment}"])
    data = cfg.data.name
    if data in _PATHS:
        # paper-scale experiments leave the annotation paths to the user, loudly
        with pytest.raises(MissingMandatoryValue, match=r"csv_path|root"):
            schema.to_trial_spec(cfg)
        cfg = compose("search", overrides=[f"experiment={experiment}", *_PATHS[data]])
    _check_search_config(cfg, build=False)


@pytest.mark.parametrize("searcher", ["differentiable", "gpb", "random", "evolution"])
def test_smoke_composes_with_every_searcher(hydra_ctx, searcher: str) -> None:
    cfg = compose("search", overrides=["experiment=smoke", f"searcher={searcher}"])
    assert cfg.searcher.name == searcher and cfg.budget == 4 and cfg.trainer.epochs == 1
    _check_search_config(cfg)
    if searcher == "gpb":  # tuning/smoke_gpb.yaml applies to this pair only
        assert cfg.searcher.n_init == 2
    if searcher == "evolution":
        assert cfg.searcher.population_size == 2


def test_paper_experiments_state_the_paper_settings(hydra_ctx) -> None:
    cfg = compose("search", overrides=["experiment=kinetics600_i3d_differentiable"])
    assert cfg.backbone.name == "i3d" and cfg.data.num_classes == 600
    assert cfg.backbone.positions == ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"]
    assert (cfg.searcher.alpha, cfg.searcher.beta) == (3, 2)  # the slides' examples
    assert load_space(cfg.space.file).size() == 290_304
    mit = compose("search", overrides=["experiment=mit_s3d_gpb"])
    assert mit.backbone.name == "s3d" and mit.data.num_classes == 339
    assert mit.searcher.name == "gpb" and len(mit.backbone.positions) == 5


def test_derive_and_train_configs_compose(hydra_ctx) -> None:
    d = compose("derive", overrides=["run_dir=/tmp/x", "alpha=2"])
    assert d.alpha == 2 and d.beta is None and d.source == "auto"
    t = compose("train", overrides=["cell=nonlocal", "backbone=r3d_tiny", "trainer.epochs=2"])
    spec = schema.to_trial_spec(t, cell=t.cell)
    assert spec.cell == "nonlocal" and spec.backbone == "r3d_tiny" and spec.train.epochs == 2


def test_trainer_schema_mirrors_train_config() -> None:
    mirror = {f.name: f.default for f in dataclasses.fields(schema.TrainerConf)}
    mirror["betas"] = tuple(schema.TrainerConf().betas)
    lib = {f.name: getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)}
    assert mirror == lib


def test_differentiable_schema_mirrors_search_config() -> None:
    conf = dataclasses.asdict(schema.DifferentiableSearcherConf())
    conf.pop("name")
    lib = {
        f.name: getattr(DifferentiableSearchConfig(), f.name)
        for f in dataclasses.fields(DifferentiableSearchConfig)
    }
    assert set(conf) == set(lib)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in conf.items()} == {
        k: v for k, v in lib.items()
    }


def test_searcher_schemas_match_constructor_arguments() -> None:
    import inspect

    from attnas.controller import GPBandit, RandomSearch, RegularizedEvolution

    for conf, cls in [
        (schema.GPBSearcherConf, GPBandit),
        (schema.RandomSearcherConf, RandomSearch),
        (schema.EvolutionSearcherConf, RegularizedEvolution),
    ]:
        params = inspect.signature(cls.__init__).parameters
        ctor = {n: p.default for n, p in params.items() if n not in ("self", "space", "seed")}
        fields = {f.name: f.default for f in dataclasses.fields(conf) if f.name != "name"}
        assert fields == ctor, cls.__name__


def test_misspelled_key_fails_at_composition_naming_it(hydra_ctx) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose("search", overrides=["searcher.alpah=2"])
    assert isinstance(info.value.__cause__, ConfigAttributeError)
    assert "alpah" in str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="sede"):
        compose("search", overrides=["sede=1"])
    with pytest.raises(ConfigCompositionException, match="epocs"):
        compose("search", overrides=["trainer.epocs=1"])


def test_wrong_type_fails_at_composition(hydra_ctx) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose("search", overrides=["trainer.epochs=two"])
    assert isinstance(info.value.__cause__, ValidationError)
    assert "trainer.epochs" in str(info.value.__cause__)


def test_unknown_option_lists_the_available_ones(hydra_ctx) -> None:
    with pytest.raises(ConfigCompositionException, match="differentiable"):
        compose("search", overrides=["searcher=bayes"])


def test_resolved_config_round_trips_through_yaml(hydra_ctx) -> None:
    cfg = compose("search", overrides=["experiment=smoke", "searcher=gpb", "seed=3"])
    again = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    assert again.seed == 3 and again.searcher.name == "gpb"


def _tiny_video_tree(root: Path) -> Path:
    """Two classes of one tiny 32x32, 24-frame video each, plus a CSV listing them."""
    import av
    import numpy as np

    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        with av.open(str(root / name / f"{name}.mp4"), mode="w") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for k in range(24):
                img = np.full((32, 32, 3), 8 * k, dtype=np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            container.mux(stream.encode(None))
    (root / "list.csv").write_text("path,label\na/a.mp4,a\nb/b.mp4,b\n")
    return root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_builds_with_every_data_group(
    hydra_ctx: None, experiment: str, tmp_path: Path
) -> None:
    """Issue 16 item 10: ``experiment=smoke data=video_folder`` failed with ``unknown dataset
    options ['num_classes', 'seed']``: presets now set only options every data group takes."""
    from attnas.data.builders import build_splits

    videos = _tiny_video_tree(tmp_path)
    paths = {
        "video_folder": [f"data.train_kwargs.root={videos}", f"data.val_kwargs.root={videos}"],
        "video_csv": [
            f"data.train_kwargs.csv_path={videos / 'list.csv'}",
            f"data.val_kwargs.csv_path={videos / 'list.csv'}",
        ],
        # the paper presets' 64 x 224 x 224 clips: generate a few, not 1024
        "moving_digits": ["data.train_kwargs.num_clips=2", "data.val_kwargs.num_clips=2"],
    }
    for data in _options("data"):
        if data == "weizmann4" and not (CONFIG_DIR.parents[1] / "shared/data/weizmann4").is_dir():
            continue  # a plain clone has no weizmann4 copy
        cfg = compose(
            "search", overrides=[f"experiment={experiment}", f"data={data}", *paths.get(data, [])]
        )
        spec = schema.to_trial_spec(cfg)
        train, val = build_splits(
            spec.dataset, spec.dataset_kwargs, spec.train_kwargs, spec.val_kwargs
        )
        assert len(train) > 0 and len(val) > 0, (experiment, data)


def test_the_space_comment_override_composes(hydra_ctx: None) -> None:
    """Issue 16 item 13: the comment suggested ``space.overrides.num_ops=2``, which fails."""
    import re

    for path in sorted((CONFIG_DIR / "space").glob("*.yaml")):
        suggested = re.search(r"e\.g\. (\S+)", path.read_text()).group(1)
        cfg = compose("search", overrides=[f"space={path.stem}", suggested])
        assert schema.load_space_from(cfg.space).num_ops == 2, path
