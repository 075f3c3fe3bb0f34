"""bf16 and float32 paths: settings, parity of the forward pass, clear errors."""

from __future__ import annotations

import pytest
import torch

from deep import train as train_module
from deep.fcn import FCN, build_network
from deep.train import cpu_flags, forward_logits, resolve_precision


def test_cpu_flags_are_read_from_cpuinfo_text():
    text = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n"
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(text)
    assert cpu_flags("nothing here") == set()


def test_auto_and_fp32_resolve_on_any_cpu(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"


def test_bf16_on_a_cpu_without_it_names_the_setting(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="precision 'bf16'.*AVX-512 BF16"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")


def test_fcn_with_an_impossible_precision_fails_before_loading_data(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)

    class Exploding:
        n_classes = 4

        def __iter__(self):
            raise AssertionError("data was loaded")

    with pytest.raises(ValueError, match="precision 'bf16'"):
        FCN(precision="bf16", device="cpu").fit(Exploding())


@pytest.mark.skipif(not train_module.cpu_has_bf16(), reason="CPU without native bfloat16")
def test_bf16_forward_agrees_with_float32(one_torch_thread):
    torch.manual_seed(0)
    net = build_network("fcn8s", "bilinear", 11, 8).eval()
    x = torch.rand(2, 3, 96, 128) * 255
    with torch.no_grad():
        ref = forward_logits(net, x, "fp32")
        low = forward_logits(net.to(memory_format=torch.channels_last), x, "bf16")
    # bfloat16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4 %) per operation; over
    # ~20 layers errors add up to a few percent of the logits' spread, and the labels of
    # pixels whose top two classes are closer than that may swap: we allow 5 % and 95 %.
    rel = (low - ref).abs().max() / ref.std()
    agree = (low.argmax(1) == ref.argmax(1)).float().mean()
    assert low.dtype == torch.float32
    assert rel < 0.05, float(rel)
    assert agree > 0.95, float(agree)
