"""The common shape of every backbone: named stages, insertion points, a head.

A ``VideoBackbone`` is a sequence of named stages (``self.stages``, an ``nn.ModuleDict``) run in
order, followed by a classification head (``self.head``). After any stage whose name is an
insertion point, the module held in ``self.inserted[name]`` (if any) is applied; that is how
``insert_cells`` adds attention cells, supergraphs or non-local blocks without touching the
backbone's own parameters. ``state_dict`` keys therefore read ``stages.<stage>.*``,
``inserted.<position>.*`` and ``head.*``; a checkpoint of a bare backbone loads into a model
with cells inserted through ``checkpoint.load_backbone_checkpoint`` (strict, except that the
cells' keys are reported as new and a classifier head of another size is dropped).

Design choices where the spec is silent:

- Feature shapes at the insertion points are computed once, at construction, by running the
  stages on a ``meta``-device copy (no arithmetic, no memory for activations), so they are
  exact for the clip shape the model was built for, whatever the padding arithmetic.
- The model remembers that clip shape (``input_shape``); a forward pass on another shape is
  allowed (convolutions do not care) but the reported insertion shapes then no longer apply,
  and shape-specific cells raise their own error.
- An inserted module must preserve the feature shape; this is checked at every forward and a
  violation raises an error naming the position.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

Shape4 = tuple[int, int, int, int]


def trace_stage_shapes(stages: nn.ModuleDict, input_shape: Shape4) -> dict[str, Shape4]:
    """Output shape ``(C, T, H, W)`` of every stage for one clip, computed on the meta device.

    Args:
        stages: Stages run in order.
        input_shape: ``(C_in, T, H, W)`` of one clip.

    Returns:
        ``{stage name: (C, T, H, W)}`` in stage order.
    """
    meta = copy.deepcopy(stages).to("meta").eval()
    x = torch.empty((1, *input_shape), device="meta")  # (1, C_in, T, H, W)
    shapes: dict[str, Shape4] = {}
    with torch.no_grad():
        for name, stage in meta.items():
            x = stage(x)  # (1, C, T', H', W')
            shapes[name] = tuple(int(s) for s in x.shape[1:])  # type: ignore[assignment]
    return shapes


class VideoBackbone(nn.Module):
    """Base class: stages + optional inserted modules + head.

    Subclasses build ``self.stages`` (ordered), call ``self.define_insertion_points(...)`` to
    record the feature shapes, then build ``self.head``. That is also how a user makes their own
    network accept cells: subclass, then ``@register_backbone`` a builder for it.

    Attributes:
        input_shape: The ``(3, T, H, W)`` clip shape the model was built for.
        num_classes: Output size.
        default_positions: The 5 insertion points used when ``insert_cells`` gets ``None``.
        inserted: ``nn.ModuleDict`` of inserted modules, keyed by insertion point.
        stages: ``nn.ModuleDict`` of stages, run in order.
        head: Module mapping the last stage's features to logits ``(B, num_classes)``.

    Shape:
        - Input: ``(B, 3, T, H, W)``
        - Output: ``(B, num_classes)``
    """

    stages: nn.ModuleDict
    head: nn.Module

    def __init__(self, num_classes: int, input_shape: Shape4) -> None:
        super().__init__()
        if len(input_shape) != 4:
            raise ValueError(f"input_shape must be (C, T, H, W), got {tuple(input_shape)}")
        self.num_classes = int(num_classes)
        self.input_shape: Shape4 = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
        self.default_positions: tuple[str, ...] = ()
        self.inserted = nn.ModuleDict()
        self._stage_shapes: dict[str, Shape4] = {}
        self._point_names: tuple[str, ...] = ()

    def define_insertion_points(
        self, point_names: Sequence[str], default_positions: Sequence[str]
    ) -> None:
        """Record the stage shapes and which stages are insertion points.

        Call once ``self.stages`` is built (and before building a head that needs
        ``feature_shape``). Runs the stages on a meta-device copy for ``self.input_shape``.

        Args:
            point_names: Stage names that accept an inserted module, in stage order.
            default_positions: The positions ``insert_cells(model, None, ...)`` uses.

        Raises:
            ValueError: If a name is not a stage, or a default position not a point.
        """
        self._stage_shapes = trace_stage_shapes(self.stages, self.input_shape)
        unknown = [p for p in point_names if p not in self._stage_shapes]
        if unknown:
            raise ValueError(f"insertion points {unknown} are not stages of {type(self).__name__}")
        self._point_names = tuple(point_names)
        bad = [p for p in default_positions if p not in self._point_names]
        if bad:
            raise ValueError(f"default positions {bad} are not insertion points")
        self.default_positions = tuple(default_positions)

    @property
    def feature_shape(self) -> Shape4:
        """``(C, T, H, W)`` of the last stage's output (the head's input)."""
        return self._stage_shapes[next(reversed(self._stage_shapes))]

    def insertion_points(self) -> dict[str, Shape4]:
        """Named insertion points and the feature shape ``(C, T, H, W)`` at each.

        The shapes are those for the clip shape the model was built for (``input_shape``).
        """
        return {name: self._stage_shapes[name] for name in self._point_names}

    def forward_features(self, x: Tensor) -> Tensor:
        """Run the stages (and inserted modules) up to the head.

        Args:
            x: Clips ``(B, 3, T, H, W)``.

        Returns:
            Features ``(B, C, T', H', W')`` of the last stage.
        """
        for name, stage in self.stages.items():
            x = stage(x)  # (B, C, T', H', W')
            if name in self.inserted:
                y = self.inserted[name](x)
                if y.shape != x.shape:
                    raise RuntimeError(
                        f"module inserted at {name!r} changed the feature shape from "
                        f"{tuple(x.shape)} to {tuple(y.shape)}; inserted modules must preserve it"
                    )
                x = y
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of clips.

        Args:
            x: Clips ``(B, 3, T, H, W)``.

        Returns:
            Logits ``(B, num_classes)``.
        """
        return self.head(self.forward_features(x))
