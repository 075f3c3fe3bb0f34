"""The upsampling study works from rows alone: skip gaps over seeds, noise floor, no checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.rows import row_stem, write_confusions
from deep.upsampling_study import noise_floor_lines, skip_gaps, summarise_gaps, to_markdown


def fake_row(store: Path, arch: str, diagonal: int, seed: int = 0, upsampling: str = "bilinear"):  # noqa: ANN201
    rng = np.random.default_rng(seed)
    per_image = rng.integers(0, 20, size=(12, 3, 3)) + diagonal * np.eye(3, dtype=np.int64)
    name = f"{arch}_{upsampling}"
    folder = store / "rows" / "quick" / "deep_cpu"
    groups = ["a"] * 6 + ["b"] * 6
    write_confusions(folder / f"{row_stem(name, seed)}.cm.npz", per_image, range(12), groups)
    total = per_image.sum(axis=0)
    tp = np.diag(total)
    miou = float(np.mean(tp / (total.sum(0) + total.sum(1) - tp)))
    return {
        "method": name, "profile": "quick", "config": "deep_cpu", "seed": seed, "miou": miou,
        "all_params": {"arch": arch, "upsampling": upsampling},
        "row_file": f"rows/quick/deep_cpu/{row_stem(name, seed)}.json",
    }  # fmt: skip


def test_skip_gaps_pair_the_bilinear_architectures_per_seed(tmp_path: Path) -> None:
    rows = [
        r
        for seed in (0, 1)
        for r in (
            fake_row(tmp_path, "fcn8s", 300, seed),
            fake_row(tmp_path, "fcn16s", 100, seed),
            fake_row(tmp_path, "fcn32s", 100, seed),
            fake_row(tmp_path, "fcn8s", 5, seed, upsampling="nearest"),  # not compared
        )
    ]
    gaps = skip_gaps(rows, tmp_path)
    assert len(gaps) == 6 and {g["seed"] for g in gaps} == {0, 1}
    pairs = {(g["a"], g["b"]) for g in gaps}
    assert ("fcn8s_bilinear", "fcn16s_bilinear") in pairs
    for g in gaps:
        if g["b"] == "fcn16s_bilinear":
            assert 0 < g["low"] <= g["gap"] <= g["high"]
        if (g["a"], g["b"]) == ("fcn16s_bilinear", "fcn32s_bilinear"):
            assert g["gap"] == 0 and g["low"] == g["high"] == 0  # identical matrices
    summary = {(s["a"], s["b"]): s for s in summarise_gaps(gaps)}
    clear = summary[("fcn8s_bilinear", "fcn16s_bilinear")]
    assert clear["n_seeds"] == 2 and clear["above"] == 2 and clear["below"] == 0
    assert "fcn8s_bilinear - fcn16s_bilinear" in to_markdown([], 1, gaps)


def test_noise_floor_reports_the_equal_layers_per_seed_and_the_seed_spread() -> None:
    entries = [
        {"config": "deep_cpu", "upsampling": up, "method": name, "test_miou": mious,
         "test_miou_sd": float(np.std(mious, ddof=1))}
        for up, name, mious in (
            ("transposed3", "t3", [0.25, 0.27]),
            ("bed_of_nails_conv", "bn", [0.28, 0.26]),
            ("bilinear", "bl", [0.30, 0.31]),
        )
    ]  # fmt: skip
    lines = noise_floor_lines(entries)
    assert lines[-1].startswith("| deep_cpu | 3.0, 1.0 |")
    assert noise_floor_lines(entries[2:])[-1].startswith("| deep_cpu | - |")


def test_variants_whose_loss_stays_at_ln_c_are_named_with_the_reason() -> None:
    from deep.upsampling_study import stuck_lines

    def entry(method: str, losses: list[float]) -> dict:
        return {"config": "deep_cpu", "method": method, "final_loss": losses, "n_classes": 11,
                "test_miou_mean": 0.03, "test_miou_sd": 0.001}  # fmt: skip

    ln11 = math.log(11)
    entries = [
        entry("fcn8s_bed_of_nails", [2.3801, 2.3808, 2.3799]),
        entry("fcn8s", [0.9, 1.1, 1.0]),
        entry("fcn8s_half", [2.38, 1.2]),  # one seed learnt: not listed
    ]
    lines = stuck_lines(entries)
    assert "## Variants that learnt nothing" in lines
    assert (
        f"| deep_cpu | fcn8s_bed_of_nails | 2.380, 2.381, 2.380 | {ln11:.3f} | 3.0 ± 0.1 |" in lines
    )
    assert not any("| fcn8s |" in ln or "fcn8s_half" in ln for ln in lines)
    assert stuck_lines(entries[1:]) == []
