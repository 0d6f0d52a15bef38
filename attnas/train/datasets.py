"""The datasets of a trial, and the held-out split a bilevel search steps on.

``build_datasets(spec)`` is how every trial gets its ``(train, val)`` pair (``run_trial`` and the
differentiable search build them the same way). ``split_dataset`` halves (or otherwise splits)
a training set deterministically from a seed, and ``heldout_loader`` reads the held-out part in
a seeded shuffled order, for a second optimiser that steps on data the network does not train
on (the first-order bilevel search).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from attnas.train.spec import TrialSpec


def build_datasets(spec: TrialSpec) -> tuple[Dataset, Dataset]:
    """``(train, val)`` of ``spec.dataset`` with the spec's dataset and split options."""
    from attnas.data.builders import build_splits

    return build_splits(spec.dataset, spec.dataset_kwargs, spec.train_kwargs, spec.val_kwargs)


def split_dataset(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``data`` into ``(kept, held_out)`` by a permutation seeded with ``seed``.

    Not stratified: the held-out part has ``max(1, round(len * fraction))`` items drawn
    uniformly; both parts keep the items in dataset order.
    """
    n = len(data)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    n_held = max(1, round(n * fraction))
    return Subset(data, sorted(perm[n_held:])), Subset(data, sorted(perm[:n_held]))


def heldout_loader(data: Dataset, batch_size: int, seed: int) -> DataLoader:
    """A shuffled loader over ``data`` whose order comes from a generator seeded with ``seed``
    (its owner may re-seed the generator per pass). Full batches only, unless ``data`` is
    smaller than one batch."""
    from attnas.data import collate_skip_failed

    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_skip_failed,
        drop_last=len(data) >= batch_size,  # type: ignore[arg-type]
        num_workers=0,
    )
