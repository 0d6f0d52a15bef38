"""``load_official("pytorchvideo.nonlocal", ...)``: the saved oracle case, every other constructor
configuration against the explicit restatement (``nonlocal_reference`` in conftest), and the
errors for keys, shapes, constructor arguments and kinds."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from attnas.blocks import NonLocalBlock
from attnas.interop import InteropError, list_kinds, load_official

KIND = "pytorchvideo.nonlocal"
ORACLE = "nl_pytorchvideo_softmax_pool122.pt"


def official_state_dict(
    dim_in: int, dim_inner: int, norm: bool, seed: int, dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """A state_dict with the official names and shapes and seeded random values, built without
    our module (so a naming or shape slip in ``NonLocalBlock`` cannot cancel out)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(dtype)

    sd = {}
    for name in ("conv_theta", "conv_phi", "conv_g"):
        sd[f"{name}.weight"] = rnd(dim_inner, dim_in, 1, 1, 1)
        sd[f"{name}.bias"] = rnd(dim_inner)
    sd["conv_out.weight"] = rnd(dim_in, dim_inner, 1, 1, 1)
    sd["conv_out.bias"] = rnd(dim_in)
    if norm:
        sd["norm.weight"] = rnd(dim_in)
        sd["norm.bias"] = rnd(dim_in)
        sd["norm.running_mean"] = rnd(dim_in)
        sd["norm.running_var"] = (torch.rand(dim_in, generator=gen, dtype=torch.float64) + 0.5).to(
            dtype
        )
        sd["norm.num_batches_tracked"] = torch.tensor(7)
    return sd


# ---------------------------------------------------------------------------------------- oracle
def test_kind_is_listed():
    assert KIND in list_kinds()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_oracle_case(load_oracle, mode):
    case = load_oracle(ORACLE)
    module = load_official(KIND, case["state_dict"], **case["ctor"])
    assert isinstance(module, NonLocalBlock)
    assert module.pool_size == (1, 2, 2)
    assert all(p.dtype == torch.float64 for p in module.parameters())
    module.train(mode == "train")
    with torch.no_grad():
        out = module(case["input"])
    want = case[f"output_{mode}"]
    assert out.shape == want.shape == case["input"].shape
    assert (out - want).abs().max() < 1e-10


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_restatement_reproduces_the_oracle(load_oracle, nonlocal_reference, mode):
    """The restatement used for the other configurations is itself checked on the oracle."""
    case = load_oracle(ORACLE)
    ctor = case["ctor"]
    out = nonlocal_reference(
        case["input"],
        case["state_dict"],
        tuple(ctor["pool_size"]),
        ctor["instantiation"],
        norm=True,
        train=mode == "train",
        eps=ctor["norm_eps"],
    )
    assert (out - case[f"output_{mode}"]).abs().max() < 1e-10


def test_oracle_state_dict_is_not_modified(load_oracle):
    case = load_oracle(ORACLE)
    before = {k: v.clone() for k, v in case["state_dict"].items()}
    module = load_official(KIND, case["state_dict"], **case["ctor"])
    module.train()
    with torch.no_grad():
        module(case["input"])  # moves the module's running stats, not the caller's tensors
    assert all(torch.equal(before[k], case["state_dict"][k]) for k in before)


# ---------------------------------------------------------------------------------------- grid
NORMS = ["BatchNorm3d", torch.nn.BatchNorm3d, None]


@pytest.mark.parametrize(
    ("pool", "instantiation", "norm"),
    list(itertools.product([(1, 1, 1), (1, 2, 2), (2, 2, 2)], ["softmax", "dot_product"], NORMS)),
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else getattr(v, "__name__", str(v)),
)
def test_every_constructor_configuration(nonlocal_reference, pool, instantiation, norm):
    dim_in, dim_inner = 6, 3
    seed = zlib.crc32(repr((pool, instantiation, str(norm))).encode())
    sd = official_state_dict(dim_in, dim_inner, norm is not None, seed)
    ctor = {
        "fn": "create_nonlocal",
        "dim_in": dim_in,
        "dim_inner": dim_inner,
        "pool_size": pool,
        "instantiation": instantiation,
        "norm": norm,
        "norm_eps": 1e-3,
        "norm_momentum": 0.2,
    }
    x = torch.randn(
        2, dim_in, 4, 4, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    for mode in ("eval", "train"):
        module = load_official(KIND, sd, **ctor)
        module.train(mode == "train")
        if norm is not None:
            assert module.norm.eps == 1e-3 and module.norm.momentum == 0.2
        else:
            assert module.norm is None
        with torch.no_grad():
            out = module(x)
        want = nonlocal_reference(
            x, sd, pool, instantiation, norm is not None, train=mode == "train", eps=1e-3
        )
        assert (out - x).abs().max() > 1e-2
        assert (out - want).abs().max() < 1e-10, mode


def test_defaults_match_create_nonlocal(nonlocal_reference):
    """Only dim_in and dim_inner given: pool (1,1,1), softmax, BatchNorm3d(eps 1e-5)."""
    sd = official_state_dict(4, 2, True, seed=1)
    module = load_official(KIND, sd, dim_in=4, dim_inner=2)
    assert module.pool is None and module.instantiation == "softmax"
    assert module.norm.eps == 1e-5 and module.norm.momentum == 0.1
    module.eval()
    x = torch.randn(1, 4, 2, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        assert (module(x) - nonlocal_reference(x, sd)).abs().max() < 1e-10


def test_dtype_follows_the_floating_point_weights():
    sd = official_state_dict(4, 2, True, seed=2)
    # a state_dict whose first entry is the integer counter still loads in float64
    reordered = {
        "norm.num_batches_tracked": sd["norm.num_batches_tracked"],
        **{k: v for k, v in sd.items() if k != "norm.num_batches_tracked"},
    }
    module = load_official(KIND, reordered, dim_in=4, dim_inner=2)
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert torch.equal(module.conv_theta.weight, sd["conv_theta.weight"])
    assert int(module.norm.num_batches_tracked) == 7
    sd32 = official_state_dict(4, 2, True, seed=2, dtype=torch.float32)
    module32 = load_official(KIND, sd32, dim_in=4, dim_inner=2)
    assert all(p.dtype == torch.float32 for p in module32.parameters())


# ---------------------------------------------------------------------------------------- errors
def test_unknown_key_named():
    sd = official_state_dict(4, 2, True, seed=3)
    sd["conv_extra.weight"] = torch.zeros(1)
    with pytest.raises(InteropError, match=r"unexpected key\(s\).*'conv_extra\.weight'"):
        load_official(KIND, sd, dim_in=4, dim_inner=2)


def test_norm_keys_without_norm_are_unexpected():
    sd = official_state_dict(4, 2, True, seed=3)
    with pytest.raises(InteropError, match=r"unexpected key\(s\).*'norm\.bias'"):
        load_official(KIND, sd, dim_in=4, dim_inner=2, norm=None)


@pytest.mark.parametrize("key", ["conv_g.bias", "norm.running_var", "conv_out.weight"])
def test_missing_key_named(key):
    sd = official_state_dict(4, 2, True, seed=3)
    del sd[key]
    with pytest.raises(InteropError) as info:
        load_official(KIND, sd, dim_in=4, dim_inner=2)
    assert "missing key(s)" in str(info.value)
    assert repr(key) in str(info.value)


def test_shape_mismatch_named():
    sd = official_state_dict(4, 2, True, seed=3)
    sd["conv_phi.weight"] = torch.zeros(3, 4, 1, 1, 1, dtype=torch.float64)
    with pytest.raises(InteropError) as info:
        load_official(KIND, sd, dim_in=4, dim_inner=2)
    message = str(info.value)
    assert "shape mismatch for 'conv_phi.weight'" in message
    assert "(3, 4, 1, 1, 1)" in message and "(2, 4, 1, 1, 1)" in message


def test_dim_inner_mismatch_is_a_shape_error():
    sd = official_state_dict(4, 2, True, seed=3)
    with pytest.raises(InteropError, match=r"shape mismatch for 'conv_theta\.weight'"):
        load_official(KIND, sd, dim_in=4, dim_inner=3)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        (
            {"dim_in": 4, "dim_inner": 2, "zero_init": True},
            r"unknown constructor argument\(s\) \['zero_init'\]",
        ),
        ({"dim_inner": 2}, r"missing constructor argument 'dim_in'"),
        ({"dim_in": 4}, r"missing constructor argument 'dim_inner'"),
        (
            {"dim_in": 4, "dim_inner": 2, "fn": "create_res_block"},
            r"builder 'create_res_block' is not create_nonlocal",
        ),
        ({"dim_in": 4, "dim_inner": 2, "norm": "LayerNorm"}, r"norm 'LayerNorm' is not supported"),
        (
            {"dim_in": 4, "dim_inner": 2, "instantiation": "gaussian"},
            r"instantiation 'gaussian' is not one of",
        ),
        ({"dim_in": 4, "dim_inner": 2, "pool_size": (1, 2)}, r"pool_size must be 3 positive"),
    ],
)
def test_bad_constructor_arguments_named(ctor, match):
    sd = official_state_dict(4, 2, True, seed=3)
    with pytest.raises(InteropError, match=match):
        load_official(KIND, sd, **ctor)


def test_unknown_kind():
    with pytest.raises(InteropError) as info:
        load_official("pytorchvideo.nonlocl", {}, dim_in=4, dim_inner=2)
    assert "unknown interop kind 'pytorchvideo.nonlocl'" in str(info.value)
    assert KIND in str(info.value)  # the known kinds are listed
