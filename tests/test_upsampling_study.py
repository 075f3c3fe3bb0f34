"""The upsampling study's paired skip-connection gaps, on hand-made rows."""

from __future__ import annotations

import numpy as np

from deep.upsampling_study import noise_floor_lines, skip_gaps, to_markdown


def fake_row(folder, arch: str, diagonal: int, upsampling: str = "bilinear"):  # noqa: ANN001, ANN201
    rng = np.random.default_rng(0)
    per_image = rng.integers(0, 20, size=(6, 3, 3)) + diagonal * np.eye(3, dtype=np.int64)
    name = f"{arch}_{upsampling}"
    np.savez(folder / f"{name}.cm.npz", per_image=per_image, names=np.arange(6))
    total = per_image.sum(axis=0)
    tp = np.diag(total)
    miou = float(np.mean(tp / (total.sum(0) + total.sum(1) - tp)))
    row = {"method": name, "profile": "quick", "config": "deep_cpu", "seed": 0, "miou": miou,
           "all_params": {"arch": arch, "upsampling": upsampling}}  # fmt: skip
    return folder, row


def test_skip_gaps_pair_the_bilinear_architectures(tmp_path) -> None:  # noqa: ANN001
    found = [
        fake_row(tmp_path, "fcn8s", 300),
        fake_row(tmp_path, "fcn16s", 100),
        fake_row(tmp_path, "fcn32s", 100),
        fake_row(tmp_path, "fcn8s", 5, upsampling="nearest"),  # not part of the comparison
    ]
    gaps = {(g["a"], g["b"]): g for g in skip_gaps(found)}
    assert set(gaps) == {
        ("fcn8s_bilinear", "fcn16s_bilinear"),
        ("fcn16s_bilinear", "fcn32s_bilinear"),
        ("fcn8s_bilinear", "fcn32s_bilinear"),
    }
    clear = gaps[("fcn8s_bilinear", "fcn16s_bilinear")]
    assert 0 < clear["low"] <= clear["gap"] <= clear["high"]
    same = gaps[("fcn16s_bilinear", "fcn32s_bilinear")]
    assert same["gap"] == 0 and same["low"] == same["high"] == 0  # identical matrices
    assert "fcn8s_bilinear - fcn16s_bilinear" in to_markdown([], 1, list(gaps.values()))


def test_noise_floor_is_the_gap_between_the_two_equal_layers() -> None:
    entries = [
        {"config": "deep_cpu", "upsampling": up, "method": name, "test_miou": miou}
        for up, name, miou in (
            ("transposed3", "t3", 0.25),
            ("bed_of_nails_conv", "bn", 0.28),
            ("bilinear", "bl", 0.3),
        )
    ]
    lines = noise_floor_lines(entries)
    assert lines[-1] == "| deep_cpu | t3 vs bn | 3.0 |"
    assert noise_floor_lines(entries[2:]) == []
