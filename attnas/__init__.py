"""attnas: neural architecture search of spatiotemporal attention cells for video classification.

Packages, in the order they depend on one another (STYLE.md):

- ``attnas.space``: search-space data (``OpSpec``, ``CellSpec``, ``SearchSpace``); no torch.
- ``attnas.ops``: the attention-op registry (map, dot, bat, rsa, sta).
- ``attnas.cells``: the discrete ``AttentionCell``.
- ``attnas.blocks``: published blocks (non-local, BAT, RSA, STA); ``attnas.interop`` loads the
  authors' weights into them.
- ``attnas.backbones``: I3D, S3D, I3D-R50 and CPU-sized variants with named insertion points.
- ``attnas.data``, ``attnas.train``: video data and the one trial trainer.
- ``attnas.supergraph`` (differentiable search) and ``attnas.controller`` (GP bandit and
  baselines); ``attnas.dispatch``: trial store and executors.
- ``attnas.cli``: the Hydra entry points.
"""

__version__ = "0.1.0"
