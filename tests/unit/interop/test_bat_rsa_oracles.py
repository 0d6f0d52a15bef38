"""``load_official`` for ``bat_video.BATBlock`` and ``rsa.RSA``: oracle files and strict loading."""

from __future__ import annotations

import pytest
import torch

from attnas.blocks.bat import BATBlock
from attnas.blocks.rsa import RSA
from attnas.interop import InteropError, load_official

BAT_CASE = "bat_video_block_T4_H8_s4_ts2_k4_tk2.pt"
RSA_CASE = "rsa_VplusR_VplusR.pt"


def _ctor(case: dict) -> dict:
    return {k: v for k, v in case["ctor"].items() if k != "cls"}


def test_bat_oracle_eval_and_train(load_oracle):
    case = load_oracle(BAT_CASE)
    module = load_official("bat_video.BATBlock", case["state_dict"], **_ctor(case))
    assert isinstance(module, BATBlock)
    assert next(module.parameters()).dtype == torch.float64
    module.eval()
    torch.testing.assert_close(module(case["input"]), case["output_eval"], rtol=0, atol=1e-10)
    module.train()
    torch.testing.assert_close(module(case["input"]), case["output_train"], rtol=0, atol=1e-10)


def test_rsa_oracle_eval(load_oracle):
    case = load_oracle(RSA_CASE)
    module = load_official("rsa.RSA", case["state_dict"], **_ctor(case)).eval()
    assert isinstance(module, RSA)
    assert (module.dk, module.dv, module.dd) == tuple(
        case["derived"][k] for k in ("dk", "dv", "dd")
    )
    torch.testing.assert_close(module(case["input"]), case["output_eval"], rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "ctor",
    [
        {"in_channels": 8, "r": 2, "s": 2, "ts": 2, "k": 2, "tk": 0, "dropout": 0.0},
        {"in_channels": 12, "r": 3, "s": 2, "ts": 3, "k": 4, "tk": 2},
    ],
)
def test_bat_round_trip_other_configurations(ctor):
    torch.manual_seed(0)
    src = BATBlock(**ctor).double().eval()
    dst = load_official("bat_video.BATBlock", src.state_dict(), **ctor).eval()
    x = torch.randn(2, ctor["in_channels"], 6, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_rsa_official_defaults_apply():
    """Left-out kernel_type/feat_type take the official default 'V', not ours."""
    src = RSA(8, 8, dk=8, kernel_type="V", feat_type="V", kernel_size=(3, 3, 3)).double()
    dst = load_official("rsa.RSA", src.state_dict(), d_in=8, d_out=8, dk=8, kernel_size=(3, 3, 3))
    assert (dst.kernel_type, dst.feat_type) == ("V", "V")
    x = torch.randn(1, 8, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_unknown_missing_and_mismatched_keys_are_named(load_oracle):
    case = load_oracle(RSA_CASE)
    ctor, sd = _ctor(case), dict(case["state_dict"])
    with pytest.raises(InteropError, match=r"unexpected key.*'extra\.weight'"):
        load_official("rsa.RSA", {**sd, "extra.weight": torch.zeros(1)}, **ctor)
    with pytest.raises(InteropError, match=r"missing key.*'G\.weight'"):
        load_official("rsa.RSA", {k: v for k, v in sd.items() if k != "G.weight"}, **ctor)
    with pytest.raises(InteropError, match=r"shape mismatch for 'H2.weight'"):
        load_official("rsa.RSA", {**sd, "H2.weight": torch.zeros(3, 1, 3, 5, 5)}, **ctor)
    bat = load_oracle(BAT_CASE)
    bsd = {k: v for k, v in bat["state_dict"].items() if not k.startswith("batransform.conv_t")}
    with pytest.raises(InteropError, match=r"missing key.*'batransform\.conv_t\.bias'"):
        load_official("bat_video.BATBlock", bsd, **_ctor(bat))


def test_bad_constructor_arguments_are_named():
    with pytest.raises(InteropError, match=r"unknown constructor argument\(s\) \['heads'\]"):
        load_official("rsa.RSA", {}, d_in=4, d_out=4, heads=2)
    with pytest.raises(InteropError, match="missing constructor argument 'in_channels'"):
        load_official("bat_video.BATBlock", {})
    with pytest.raises(InteropError, match="dk == dd; got dk=4, dd=2"):
        load_official("rsa.RSA", {}, d_in=4, d_out=4, dk=4, dd=2, kernel_type="V")
    with pytest.raises(InteropError, match=r"in_channels \(6\) divisible by k \(4\)"):
        load_official("bat_video.BATBlock", {}, in_channels=12, k=4)
