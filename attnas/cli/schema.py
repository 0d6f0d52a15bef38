"""Structured-config schemas of the three CLIs, registered in Hydra's ConfigStore.

Every config group option in ``conf/`` starts its defaults list with one of the schemas stored
here (``schema_<group>`` in the group, e.g. ``searcher/gpb.yaml`` extends
``schema_gpb``), and the primary configs extend ``schema_search`` / ``schema_derive`` /
``schema_train``. Hydra therefore validates every key and type at composition: a misspelled
override (``searcher.alpah=2``) or a wrong type (``trainer.epochs=two``) fails with Hydra's own
message naming the key, before any data is built.

Design choices where the spec is silent:

- The schemas mirror the library's dataclasses (``TrainConfig``, ``DifferentiableSearchConfig``,
  the searchers' constructors) instead of reusing them, because OmegaConf supports neither
  ``Literal`` nor fixed-length tuples; ``tests/unit/cli/test_cli_schema.py`` checks that the mirrors
  keep the library's field names and defaults, so they cannot drift apart silently.
- Free-form builder arguments (dataset options, backbone options, space overrides) are
  ``dict[str, Any]``: each builder already rejects an unknown option with a message naming it.
- The trial budget of the bandit searchers (``budget``) is a top-level key, not a searcher key,
  so that one experiment file (``experiment=smoke``) can size every searcher; the differentiable
  search's budget is the trainer's epochs.
- Only this package (and ``experiments/``) imports Hydra; the library receives plain values
  (``to_train_config``, ``to_search_config``, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


# ---------------------------------------------------------------------------- groups
@dataclass
class SpaceConf:
    """The search space: a file under ``search_spaces/`` (bare name) or a path.

    Attributes:
        file: ``attention_nas``, ``attention_nas_plus``, ``nonlocal`` or a YAML path.
        overrides: top-level keys of the space file replaced (e.g. ``{num_ops: 2}``).
    """

    file: str = MISSING
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackboneConf:
    """The backbone and where cells go.

    Attributes:
        name: registry name (``attnas.backbones.list_backbones()``).
        positions: insertion points (None: the backbone's 5 default positions).
        kwargs: extra builder arguments (``width``, ``dropout``, ...).
        checkpoint: local backbone weights (None: random initialisation).
    """

    name: str = MISSING
    positions: list[str] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None


@dataclass
class DataConf:
    """The dataset: a registry name and its builder arguments.

    Attributes:
        name: registry name (``attnas.data.list_datasets()``).
        kwargs: builder arguments of both splits.
        train_kwargs: builder arguments of the training split only.
        val_kwargs: builder arguments of the validation split only.
        num_classes: classes (None: the dataset's).
        input_shape: clip shape ``[3, T, H, W]`` (None: the dataset's).
    """

    name: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    val_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: list[int] | None = None


@dataclass
class TrainerConf:
    """Mirror of ``attnas.train.TrainConfig`` (see its docstring for each field)."""

    epochs: int = 1
    batch_size: int = 16
    val_batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    amp: str = "none"
    channels_last: bool = False
    deterministic: bool = False
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = True
    max_steps_per_epoch: int | None = None
    sync_batchnorm: bool = False
    device: str = "auto"
    progress: bool | None = None
    checkpoint_every: int = 1
    max_val_nonfinite: float = 0.0


@dataclass
class DifferentiableSearcherConf:
    """The differentiable searcher; mirrors ``DifferentiableSearchConfig``.

    ``alpha``/``beta`` None take the space file's ``derivation`` values.
    """

    name: str = "differentiable"
    mode: str = "joint"
    position_specific: bool = False
    arch_lr: float = 3e-3
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_lr_schedule: str = "constant"
    arch_min_lr_ratio: float = 0.0
    warmup_epochs: int = 0
    temperature: float = 1.0
    temperature_final: float | None = None
    temperature_schedule: str = "exponential"
    sink_bn_init: float | None = None
    beta_decay: float = 0.0
    entropy_penalty: float = 0.0
    dirichlet: bool = False
    perturbation: float = 0.0
    gumbel: bool = False
    selection: str = "weights"
    oneshot_ops: int = 2
    oneshot_retrain: int = 0
    oneshot_retrain_seeds: int = 2
    telemetry_every: int = 0
    alpha: int | None = None
    beta: int | None = None
    heldout_fraction: float = 0.5
    retrain: bool = False
    baselines: list[str] = field(default_factory=lambda: ["none", "nonlocal"])


@dataclass
class RandomSearcherConf:
    """Uniform random search over the space (``attnas.controller.RandomSearch``)."""

    name: str = "random"


@dataclass
class EvolutionSearcherConf:
    """Regularized evolution (``attnas.controller.RegularizedEvolution``)."""

    name: str = "evolution"
    population_size: int = 20
    sample_size: int = 5


@dataclass
class GPBSearcherConf:
    """The GP-UCB bandit (``attnas.controller.GPBandit``; see its docstring for each field)."""

    name: str = "gpb"
    kernel: str = "categorical"
    delta: float = 0.1
    beta: float | None = None
    beta_scale: float = 0.2
    n_init: int = 4
    failure_rule: str = "impute_min"
    exhaustive_limit: int = 1_000_000
    pool_size: int = 20_000
    local_search_steps: int = 5
    fit_restarts: int = 1
    fit_maxiter: int = 100
    restart_max_points: int = 100
    refit_growth: float = 0.1
    warm_maxiter: int = 20
    chunk_size: int = 8192
    shortlist: int = 1024
    prior_mean: str | None = None


@dataclass
class DispatchConf:
    """Where bandit trials run (``attnas.dispatch``); unused by the differentiable searcher.

    Attributes:
        name: ``local`` (one process per trial) or ``ray``.
        workers: concurrent trials (None: one per GPU, or 1 without GPUs / from Ray's resources).
        timeout_s: per-trial wall-clock limit (None: none).
        max_attempts: starts allowed for a trial whose worker dies.
        poll_interval_s: longest wait for a finished trial before checking again.
        fail_fast: stop the search when its first this many trials all fail with the same
            error (0: never; ``attnas.dispatch.run_search``).
        gpus: local: ``auto``, a list of GPU ids, or null for CPU workers.
        threads_per_worker: local: ``OMP_NUM_THREADS`` per worker (None: cores // workers).
        address: ray: cluster address (None: start a local Ray).
        gpus_per_trial: ray: GPUs per trial (None: 1 if the cluster has GPUs).
        cpus_per_trial: ray: CPUs per trial.
        num_cpus: ray: CPUs of a local Ray started here.
    """

    name: str = MISSING
    workers: int | None = None
    timeout_s: float | None = None
    max_attempts: int = 3
    poll_interval_s: float = 1.0
    fail_fast: int = 3
    gpus: Any = "auto"
    threads_per_worker: int | None = None
    address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float = 1.0
    num_cpus: int | None = None


@dataclass
class TrackingConf:
    """Experiment tracking of every training run.

    Attributes:
        name: ``jsonl`` (``metrics.jsonl`` only), ``wandb`` (plus wandb) or ``none``.
        wandb_mode: ``WANDB_MODE`` set when it is unset (``offline``: no account needed).
    """

    name: str = MISSING
    wandb_mode: str | None = None


@dataclass
class ReportConf:
    """What ``report.md`` compares.

    Attributes:
        baselines: bandit searchers: retrain the ``retrain_top`` best cells with fresh seeds
            and train the backbone alone and with non-local blocks, each under the trials'
            budget, for the comparison table (the selection figure is shown apart).
        top_k: bandit searchers: how many of the best cells are exported as YAML.
        retrain_top: bandit searchers: how many of the best cells ``baselines`` retrains.
    """

    baselines: bool = False
    top_k: int = 3
    retrain_top: int = 3


@dataclass
class ProxyConf:
    """A differentiable search under a tabular benchmark's proxy protocol (``make demo``).

    With ``benchmark`` set, the search, the derivation and the retraining all run under that
    table's protocol (``ProxyProtocol`` in its manifest: pre-trained backbone, frozen prefix,
    positions, task, clips and training budget), and the table places the derived cell; the
    ``backbone``, ``data`` and ``trainer`` groups are then not used (the report says so), nor
    are ``searcher.retrain`` and ``searcher.baselines``: the derived cell, the backbone alone
    and + non-local are always retrained, since the comparison is what the demo is for.

    Attributes:
        benchmark: a table name (``benchmarks/<name>``) or folder; None: the ordinary search.
        seeds: the fresh seeds each of the derived cell, the backbone alone and + non-local is
            retrained with under the protocol (the search's ``seed`` may not be one of them).
    """

    benchmark: str | None = None
    seeds: list[int] = field(default_factory=lambda: [100, 101, 102])


# ---------------------------------------------------------------------------- primaries
@dataclass
class SearchConf:
    """``attnas-search``'s primary config (``conf/search.yaml``).

    Attributes:
        searcher: one of the ``searcher`` group's schemas.
        report: what the report compares (bandit searchers).
        proxy: search under a tabular benchmark's protocol (differentiable searcher).
        budget: trials the bandit searchers finish (completed + failed).
        seed: master seed (every trial's seed derives from it).
        resume: continue the search in an existing run directory (``hydra.run.dir=<dir>``).
        name: a label for the run (report title, wandb run names).
    """

    searcher: Any = MISSING
    space: SpaceConf = MISSING
    backbone: BackboneConf = MISSING
    data: DataConf = MISSING
    trainer: TrainerConf = MISSING
    dispatch: DispatchConf = MISSING
    tracking: TrackingConf = MISSING
    report: ReportConf = field(default_factory=ReportConf)
    proxy: ProxyConf = field(default_factory=ProxyConf)
    budget: int = 20
    seed: int = 0
    resume: bool = False
    name: str = "search"


@dataclass
class DeriveConf:
    """``attnas-derive``'s primary config (``conf/derive.yaml``).

    Attributes:
        run_dir: a differentiable search's run directory.
        alpha: sink nodes kept (None: the search's α).
        beta: predecessors kept per node (None: the search's β).
        out_dir: where cells go (None: ``<run_dir>/derived_a{alpha}_b{beta}``).
        source: ``auto`` (the exported weights JSON when present), ``weights`` or
            ``checkpoint`` (``search/checkpoints/last.pt``: also works mid-search).
    """

    run_dir: str = MISSING
    alpha: int | None = None
    beta: int | None = None
    out_dir: str | None = None
    source: str = "auto"


@dataclass
class TrainConf:
    """``attnas-train``'s primary config (``conf/train.yaml``).

    Attributes:
        cell: ``none``, ``nonlocal`` or a cell file (YAML/JSON).
        op_channel_ratio: ``C_op = C * ratio`` for attention cells.
        backbone: the backbone group.
        data: the data group.
        trainer: the trainer group.
        tracking: the tracking group.
        seed: the training seed (overrides ``trainer.seed``).
        name: a label for the run.
        resume: continue the run in an existing run directory (``hydra.run.dir=<dir>``) from
            its last checkpoint; the settings must be those of the run there.
    """

    cell: str = "none"
    op_channel_ratio: float = 0.25
    backbone: BackboneConf = MISSING
    data: DataConf = MISSING
    trainer: TrainerConf = MISSING
    tracking: TrackingConf = MISSING
    seed: int = 0
    name: str | None = None
    resume: bool = False


@dataclass
class ExportConf:
    """``attnas-export``'s primary config (``conf/export.yaml``; see ``attnas.cli.export``)."""

    cell: str = MISSING
    shape: list[int] | None = None
    backbone: BackboneConf | None = None
    num_classes: int = 10
    input_shape: list[int] | None = None
    op_channel_ratio: float = 0.25
    checkpoint: str | None = None
    out: str = "exported"
    seed: int = 0


SEARCHER_SCHEMAS: dict[str, type] = {
    "differentiable": DifferentiableSearcherConf,
    "gpb": GPBSearcherConf,
    "random": RandomSearcherConf,
    "evolution": EvolutionSearcherConf,
}
BANDIT_SEARCHERS = ("gpb", "random", "evolution")

_GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "searcher": SEARCHER_SCHEMAS,
    "space": {"space": SpaceConf},
    "backbone": {"backbone": BackboneConf},
    "data": {"data": DataConf},
    "trainer": {"trainer": TrainerConf},
    "dispatch": {"dispatch": DispatchConf},
    "tracking": {"tracking": TrackingConf},
}


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="schema_search", node=SearchConf)
    cs.store(name="schema_derive", node=DeriveConf)
    cs.store(name="schema_train", node=TrainConf)
    cs.store(name="schema_export", node=ExportConf)
    for group, schemas in _GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"schema_{name}", node=node)


# ---------------------------------------------------------------------------- conversion
def plain(node: Any) -> Any:
    """A resolved plain container of ``node``; raises on a missing mandatory value (``???``)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node


def _fields(node: Any, drop: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    data = plain(node)
    return {k: v for k, v in data.items() if k not in drop}


def to_train_config(trainer: Any, seed: int | None = None) -> Any:
    """The ``attnas.train.TrainConfig`` of a ``trainer`` node (``seed`` replaces its seed)."""
    from attnas.train import TrainConfig

    data = _fields(trainer, drop=())
    if seed is not None:
        data["seed"] = int(seed)
    return TrainConfig.from_dict(data)


def to_search_config(searcher: Any) -> Any:
    """The ``DifferentiableSearchConfig`` of a differentiable ``searcher`` node."""
    from attnas.supergraph.search import DifferentiableSearchConfig

    data = _fields(searcher)
    known = {f.name for f in dataclasses.fields(DifferentiableSearchConfig)}
    return DifferentiableSearchConfig(**{k: v for k, v in data.items() if k in known})


def searcher_kwargs(searcher: Any) -> dict[str, Any]:
    """Constructor keyword arguments of a bandit ``searcher`` node (all but ``name``)."""
    return _fields(searcher)


def load_space_from(space: Any) -> Any:
    """The ``SearchSpace`` of a ``space`` node (``attnas.space.load_space``)."""
    from attnas.space import load_space

    data = plain(space)
    return load_space(data["file"], **dict(data.get("overrides") or {}))


def to_trial_spec(
    cfg: Any,
    *,
    cell: str | dict[str, Any] = "none",
    op_channel_ratio: float = 0.25,
    op_params: dict[str, dict[str, Any]] | None = None,
    run_dir: str | None = None,
    resume: bool = False,
    name: str | None = None,
) -> Any:
    """The ``attnas.train.TrialSpec`` of a config's backbone, data, trainer and tracking nodes.

    Args:
        cfg: a composed ``attnas-search`` or ``attnas-train`` config.
        cell: what to insert (``none``, ``nonlocal``, a cell file or a ``CellSpec`` dict).
        op_channel_ratio: ``C_op = C * ratio`` for attention cells.
        op_params: per-op-type options (a space's ``op_types.*.params``).
        run_dir: where the run writes (None: nowhere).
        resume: continue from ``run_dir``'s last checkpoint.
        name: the run's name.

    Returns:
        The spec (its ``train.seed`` and ``master_seed`` are ``cfg.seed``).
    """
    from attnas.train import TrialSpec

    backbone = plain(cfg.backbone)
    data = plain(cfg.data)
    shape = data.get("input_shape")
    return TrialSpec(
        backbone=backbone["name"],
        cell=cell,
        positions=None if backbone.get("positions") is None else tuple(backbone["positions"]),
        op_channel_ratio=op_channel_ratio,
        op_params=dict(op_params or {}),
        dataset=data["name"],
        dataset_kwargs=dict(data.get("kwargs") or {}),
        train_kwargs=dict(data.get("train_kwargs") or {}),
        val_kwargs=dict(data.get("val_kwargs") or {}),
        num_classes=data.get("num_classes"),
        input_shape=None if shape is None else tuple(shape),
        backbone_kwargs=dict(backbone.get("kwargs") or {}),
        backbone_checkpoint=backbone.get("checkpoint"),
        train=to_train_config(cfg.trainer, seed=int(cfg.seed)),
        master_seed=int(cfg.seed),
        run_dir=run_dir,
        resume=resume,
        tracker=plain(cfg.tracking)["name"],
        name=name,
    )


register_configs()
