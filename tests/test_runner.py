import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bench import methods
from bench.config import load_config, parse_config
from bench.datasets import Synthetic
from bench.datasets.io import write_label
from bench.errors import SegbenchError
from bench.metrics import bootstrap_miou_ci, confusion_matrix, scores
from bench.runner import evaluate_dir, run_config, upsample_proba


def synthetic_config(*method_entries, profile="quick", name="t", **extra):
    data = {
        "name": name,
        "profile": profile,
        "dataset": "synthetic",
        "dataset_options": {"size": [32, 40]},
        "train_subset": 4,
        "eval_subset": 5,
        "bootstrap": 50,
        "sample_images": 2,
        "methods": list(method_entries),
        **extra,
    }
    return parse_config(data)


@pytest.fixture()
def dirs(tmp_path):
    return {"results_dir": tmp_path / "results", "runs_dir": tmp_path / "runs"}


@pytest.fixture(autouse=True)
def fake_methods(monkeypatch):
    for name in ("Boom", "Interrupt", "BadShape", "Oracle", "NaNLater", "Seeded"):
        monkeypatch.setitem(methods.METHODS, name.lower(), f"fake_methods:{name}")


def test_scores_of_a_known_method_are_exact(dirs):
    rows = run_config(synthetic_config("oracle"), **dirs)
    row = rows[0]
    test = Synthetic("test", n_images=5, size=(32, 40))
    total = sum(
        confusion_matrix(np.ones_like(test.native_label(i)), test.native_label(i), 4, 4)
        for i in range(5)
    )
    expected = scores(total)
    assert row["status"] == "ok"
    assert row["miou"] == pytest.approx(expected["miou"])
    assert row["global_acc"] == pytest.approx(expected["global_acc"])
    assert row["confusion"] == total.tolist()
    assert row["miou_ci_low"] <= row["miou"] <= row["miou_ci_high"]
    assert row["predict_ms_median"] >= 0 and row["fit_s"] >= 0 and row["peak_mb"] > 0
    assert row["environment"]["cpu"] and row["n_images"] == 5 and row["profile"] == "quick"


def test_outputs_on_disk(dirs):
    run_config(synthetic_config("class_prior", "oracle"), **dirs)
    out = dirs["results_dir"] / "rows" / "quick" / "t"
    assert (out / "config.yaml").is_file()
    assert json.loads((out / "oracle.seed0.json").read_text())["method"] == "oracle"
    npz = np.load(out / "oracle.seed0.cm.npz")
    assert npz["per_image"].shape == (5, 4, 4)
    assert len(list((out / "samples" / "oracle.seed0").glob("*.png"))) == 2
    preds = sorted((dirs["runs_dir"] / "pred" / "quick" / "t" / "oracle.seed0").glob("*.png"))
    assert len(preds) == 5


def test_predictions_score_the_same_through_evaluate(dirs):
    row = run_config(synthetic_config("class_prior"), **dirs)[0]
    test = Synthetic("test", n_images=5, size=(32, 40))
    s, _ = evaluate_dir(dirs["runs_dir"] / "pred" / "quick" / "t" / "class_prior.seed0", test)
    assert s["miou"] == pytest.approx(row["miou"])


class Drives(Synthetic):
    """Synthetic images as frames of two drives, resampled in blocks of 3."""

    block_length = 3

    @property
    def groups(self) -> list[str]:
        return ["a"] * 4 + ["b"] * (len(self) - 4)


def test_evaluate_resamples_blocks_of_frames_as_rows_do(tmp_path):
    test = Drives("test", n_images=10, size=(24, 32))
    rng = np.random.default_rng(0)
    per_image = []
    for _image, label, name in test:
        pred = np.where(rng.random(label.shape) < 0.5, label % test.n_classes, 0).astype(np.uint8)
        write_label(tmp_path / f"{name}.png", pred)
        per_image.append(confusion_matrix(pred, label, test.n_classes, test.ignore_index))
    _, ci = evaluate_dir(tmp_path, test)
    blocks = bootstrap_miou_ci(np.stack(per_image), groups=test.groups, block_length=3)
    singles = bootstrap_miou_ci(np.stack(per_image))
    assert ci == pytest.approx(blocks) and ci != pytest.approx(singles)


def test_failure_is_recorded_and_the_run_goes_on(dirs):
    cfg = synthetic_config(
        "boom",
        {"name": "boom", "id": "boom_predict", "params": {"where": "predict"}},
        "badshape",
        "oracle",
    )
    rows = {r["method"]: r for r in run_config(cfg, **dirs)}
    assert rows["boom"]["status"] == "failed" and "boom in fit" in rows["boom"]["error"]
    assert "boom in predict" in rows["boom_predict"]["error"]
    assert "must return an array" in rows["badshape"]["error"]
    assert rows["oracle"]["status"] == "ok"
    err = dirs["runs_dir"] / "pred" / "quick" / "t" / "boom.seed0" / "error.txt"
    assert "Traceback" in err.read_text()


def test_kill_keeps_earlier_rows_and_rerun_resumes(dirs):
    from fake_methods import Oracle

    Oracle.fits = 0
    cfg = synthetic_config("oracle", "interrupt", "class_prior")
    with pytest.raises(KeyboardInterrupt):
        run_config(cfg, **dirs)
    out = dirs["results_dir"] / "rows" / "quick" / "t"
    assert (out / "oracle.seed0.json").is_file() and not (out / "interrupt.seed0.json").exists()
    assert Oracle.fits == 1
    # the rerun skips the finished method (same fingerprint)
    cfg2 = synthetic_config("oracle", "class_prior")
    run_config(cfg2, **dirs)
    assert Oracle.fits == 1
    assert (out / "class_prior.seed0.json").is_file()
    # --force redoes it; a changed parameter also redoes it
    run_config(cfg2, force=True, only=["oracle"], **dirs)
    assert Oracle.fits == 2
    run_config(synthetic_config("oracle", seed=1), **dirs)
    assert Oracle.fits == 3
    assert (out / "oracle.seed1.json").is_file() and (out / "oracle.seed0.json").is_file()


def test_failed_methods_are_retried(dirs):
    run_config(synthetic_config("boom"), **dirs)
    rows = run_config(synthetic_config({"name": "boom", "params": {"where": "never"}}), **dirs)
    # the parameter change re-runs it; it now fails in predict instead of fit
    assert "predict" in rows[0]["error"]


def test_a_quick_run_never_touches_heavier_rows(dirs):
    run_config(synthetic_config("oracle", profile="full"), **dirs)
    full_row = dirs["results_dir"] / "rows" / "full" / "t" / "oracle.seed0.json"
    before = full_row.read_bytes()
    run_config(synthetic_config("oracle", profile="quick"), force=True, **dirs)
    assert full_row.read_bytes() == before
    assert (dirs["results_dir"] / "rows" / "quick" / "t" / "oracle.seed0.json").is_file()


def test_bad_method_name_or_param_fails_before_any_work(dirs):
    with pytest.raises(SegbenchError, match="unknown method 'nope'"):
        run_config(synthetic_config("class_prior", "nope"), **dirs)
    with pytest.raises(SegbenchError, match="has no parameter 'trees'"):
        run_config(synthetic_config({"name": "colour_forest", "params": {"trees": 3}}), **dirs)
    assert not (dirs["results_dir"] / "rows").exists()


def test_bad_data_stops_the_run_without_touching_rows(dirs, camvid_copy):
    cfg = parse_config(
        {
            "name": "c",
            "dataset": "camvid",
            "data_root": str(camvid_copy),
            "train_split": "test",
            "val_split": None,
            "bootstrap": 10,
            "methods": ["class_prior", "oracle"],
        }
    )
    run_config(cfg, only=["class_prior"], **dirs)
    row = dirs["results_dir"] / "rows" / "quick" / "c" / "class_prior.seed0.json"
    before = row.read_bytes()
    label_file = camvid_copy / "camvid" / "testannot" / "0001TP_008550.png"
    label_file.write_bytes(label_file.read_bytes()[:300])
    with pytest.raises(SegbenchError, match="0001TP_008550.png: not a readable PNG"):
        run_config(cfg, force=True, **dirs)
    assert row.read_bytes() == before


def test_upsample_proba_keeps_a_distribution():
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=(4, 5)).astype(np.float32)
    up = upsample_proba(p, (8, 10))
    assert up.shape == (8, 10, 3)
    np.testing.assert_allclose(up.sum(-1), 1.0, atol=1e-5)
    assert upsample_proba(p, (4, 5)) is p


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("methods: [class_prior]\nresolutoin: [1, 2]\n")
    with pytest.raises(SegbenchError, match=r"c\.yaml: unknown config key 'resolutoin'"):
        load_config(path)
    path.write_text("methods: [{name: a, prams: {}}]\n")
    with pytest.raises(SegbenchError, match=r"methods\[0\]: unknown key 'prams'"):
        load_config(path)
    path.write_text("methods: [a, a]\n")
    with pytest.raises(SegbenchError, match="ids repeat: a"):
        load_config(path)
    path.write_text("profile: huge\nmethods: [a]\n")
    with pytest.raises(SegbenchError, match="profile must be one of"):
        load_config(path)
    path.write_text("methods: [a\n")
    with pytest.raises(SegbenchError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(SegbenchError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_are_valid():
    for path in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml")):
        cfg = load_config(path)
        for spec in cfg.methods:
            methods.build_method(spec.name, spec.params)


def test_crf_stage_row_shares_the_fit(dirs, monkeypatch):
    from fake_methods import Oracle

    monkeypatch.setitem(methods.METHODS, "dense_crf", "fake_methods:FakeStage")
    Oracle.fits = 0
    cfg = synthetic_config({"name": "oracle", "crf": {"strength": 2.0}}, val_split="val")
    rows = {r["method"]: r for r in run_config(cfg, **dirs)}
    assert Oracle.fits == 1  # one fit serves both rows
    assert set(rows) == {"oracle", "oracle+crf"}
    assert rows["oracle+crf"]["crf_of"] == "oracle"
    assert rows["oracle+crf"]["fit_summary"] == {"tuned_on": "val"}
    assert "fit_summary" not in rows["oracle"]
    assert rows["oracle+crf"]["params"] == {"strength": 2.0}
    assert rows["oracle+crf"]["fit_s"] >= rows["oracle"]["fit_s"]
    assert rows["oracle+crf"]["miou"] != rows["oracle"]["miou"]
    run_config(cfg, **dirs)
    assert Oracle.fits == 1  # both rows done: skipped
    with pytest.raises(SegbenchError, match="has no parameter 'nope'"):
        run_config(synthetic_config({"name": "oracle", "crf": {"nope": 1}}), **dirs)


def test_seeds_give_one_row_each_and_reach_the_method(dirs):
    rows = run_config(synthetic_config("seeded", seeds=[0, 1, 2, 3]), **dirs)
    assert [r["seed"] for r in rows] == [0, 1, 2, 3]
    assert [r["all_params"]["random_state"] for r in rows] == [0, 1, 2, 3]
    # different seeds, different models (the 4 draws are not all the same class)
    assert len({round(r["miou"], 9) for r in rows}) > 1
    again = run_config(synthetic_config("seeded", seeds=[2]), force=True, **dirs)
    assert again[0]["miou"] == rows[2]["miou"]


@pytest.mark.parametrize(
    "seeds", [[], [1.5], ["0"], [True], [0, 0], 3, [-1]], ids=lambda s: repr(s)
)
def test_bad_seeds_are_refused(seeds):
    with pytest.raises(SegbenchError, match="seeds"):
        synthetic_config("class_prior", seeds=seeds)


def test_random_state_in_params_is_refused():
    with pytest.raises(SegbenchError, match="random_state"):
        synthetic_config({"name": "colour_forest", "params": {"random_state": 3}})


def test_fingerprint_covers_defaults_code_and_lock(dirs, monkeypatch):
    from fake_methods import Oracle

    import bench.runner as runner

    Oracle.fits = 0
    run_config(synthetic_config("oracle"), **dirs)
    run_config(synthetic_config("oracle"), **dirs)
    assert Oracle.fits == 1
    monkeypatch.setattr(runner, "method_code_hash", lambda module: "other-code")
    run_config(synthetic_config("oracle"), **dirs)
    assert Oracle.fits == 2  # changed code: recomputed
    monkeypatch.setattr(runner, "lock_hash", lambda: "other-lock")
    run_config(synthetic_config("oracle"), **dirs)
    assert Oracle.fits == 3  # changed lock file: recomputed
    # a changed default of the method's constructor changes get_params, hence the row
    row0 = run_config(synthetic_config("colour_forest"), **dirs)[0]
    import baselines.colour_forest as cf

    defaults = list(cf.ColourForest.__init__.__defaults__)
    names = cf.ColourForest._get_param_names()
    init_names = cf.ColourForest.__init__.__code__.co_varnames[1 : 1 + len(names)]
    defaults[list(init_names)[-len(defaults) :].index("n_estimators")] = 3
    monkeypatch.setattr(cf.ColourForest.__init__, "__defaults__", tuple(defaults))
    row1 = run_config(synthetic_config("colour_forest"), **dirs)[0]
    assert row1["fingerprint"] != row0["fingerprint"]
    assert row1["all_params"]["n_estimators"] == 3


def test_rows_record_provenance(dirs):
    row = run_config(synthetic_config("class_prior"), **dirs)[0]
    prov = row["provenance"]
    assert set(prov) >= {"git_commit", "dirty", "code_hash", "lock_hash"}
    assert isinstance(prov["dirty"], bool) and len(prov["code_hash"]) == 16
    assert row["schema_version"] == 2
    assert row["ci"]["block_length"] >= 1
    assert set(row["per_sequence"]) == set(Synthetic("test", n_images=5, size=(32, 40)).groups)


def test_nan_in_any_image_is_an_error_naming_it(dirs):
    row = run_config(synthetic_config("nanlater"), **dirs)[0]
    test = Synthetic("test", n_images=5, size=(32, 40))
    assert row["status"] == "failed"
    assert "NaN" in row["error"] and test.names[1] in row["error"]


def test_another_config_with_the_same_name_is_refused(dirs):
    run_config(synthetic_config("class_prior"), **dirs)
    out = dirs["results_dir"] / "rows" / "quick" / "t"
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    with pytest.raises(SegbenchError, match="other settings"):
        run_config(synthetic_config("class_prior", eval_subset=3), **dirs)
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


@pytest.mark.parametrize("name", ["/tmp/abs", "../up", "a/b", "", ".hidden", 3])
def test_config_names_are_plain_names(name):
    with pytest.raises(SegbenchError, match="plain name"):
        synthetic_config("class_prior", name=name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"seed": True}, "'seed' must be an integer"),
        ({"bootstrap": 1.5}, "'bootstrap' must be an integer"),
        ({"bootstrap": -1}, "'bootstrap' must be at least 1"),
        ({"bootstrap": 0}, "'bootstrap' must be at least 1"),
        ({"sample_images": 0}, "'sample_images' must be at least 1"),
        ({"train_subset": True}, "'train_subset' must be a positive integer"),
        ({"resolution": [True, 40]}, "'resolution' must be"),
        ({"split": 1}, "'split' must be a string"),
        ({"dataset": True}, "'dataset' must be a string"),
        ({"val_split": 0}, "'val_split' must be a string or null"),
        ({"seeds": [0, False]}, "'seeds' must be a non-empty list"),
    ],
)  # fmt: skip
def test_config_values_are_checked_for_their_type(extra, message):
    with pytest.raises(SegbenchError, match=message):
        synthetic_config("class_prior", **extra)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": 3}, "'name' must be a method name"),
        ({"name": "class_prior", "id": "../x"}, "'id' must be a plain name"),
        ({"name": "class_prior", "id": "a/b"}, "'id' must be a plain name"),
        ({"name": "class_prior", "id": 7}, "'id' must be a plain name"),
    ],
)  # fmt: skip
def test_method_names_and_ids_are_checked(entry, message):
    with pytest.raises(SegbenchError, match=message):
        synthetic_config(entry)


def test_an_id_may_name_a_pipeline_but_not_collide_with_a_crf_row():
    cfg = synthetic_config({"name": "class_prior", "id": "prior+gc"})
    assert cfg.methods[0].id == "prior+gc"
    with pytest.raises(SegbenchError, match="method ids repeat: class_prior\\+crf"):
        synthetic_config({"name": "class_prior", "crf": True},
                         {"name": "class_prior", "id": "class_prior+crf"})  # fmt: skip


def test_an_outside_method_is_stored_under_its_class_name():
    cfg = synthetic_config({"name": "mypkg.mod:MyMethod"})
    assert cfg.methods[0].id == "MyMethod"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_estimators": True}, "'n_estimators' must be a number, not True"),
        ({"n_estimators": "10"}, "'n_estimators' must be a number"),
        ({"lr": "1e-3"}, r"YAML reads 1e-3 as text"),
        ({"stage2": 1}, "'stage2' must be true or false, not 1"),
    ],
)  # fmt: skip
def test_method_parameter_types_are_checked_before_any_fit(dirs, params, message):
    from bench.methods import build_method

    name = "fcn" if "lr" in params else "colour_forest"
    if "stage2" in params:
        name = "texton_forest"
    with pytest.raises(SegbenchError, match=message):
        build_method(name, params)
    # the runner checks every method before the first fit: nothing is written
    cfg = synthetic_config("class_prior", {"name": name, "params": params})
    with pytest.raises(SegbenchError, match=message):
        run_config(cfg, **dirs)
    assert not (dirs["results_dir"] / "rows").exists() or not any(
        (dirs["results_dir"] / "rows").rglob("*.json")
    )


def test_a_second_run_of_the_same_group_is_refused(dirs):
    from bench.runner import group_lock, rows_dir

    cfg = synthetic_config("class_prior")
    with group_lock(rows_dir(cfg, dirs["results_dir"])):
        with pytest.raises(SegbenchError, match="another segbench run"):
            run_config(cfg, **dirs)


def test_wrong_sized_test_image_stops_the_run(dirs, camvid_copy):
    from PIL import Image

    cfg = parse_config(
        {
            "name": "c", "dataset": "camvid", "data_root": str(camvid_copy),
            "train_split": "test", "val_split": None, "train_subset": 1, "bootstrap": 10,
            "methods": ["class_prior"],
        }
    )  # fmt: skip
    run_config(cfg, **dirs)
    row = dirs["results_dir"] / "rows" / "quick" / "c" / "class_prior.seed0.json"
    before = row.read_bytes()
    image = camvid_copy / "camvid" / "test" / "0001TP_008580.png"
    Image.open(image).resize((240, 180)).save(image)
    with pytest.raises(SegbenchError, match="0001TP_008580.png: label is 480x360"):
        run_config(cfg, force=True, **dirs)
    assert row.read_bytes() == before


def test_checkpoints_go_to_the_runs_folder_and_stay_out_of_rows(dirs):
    fcn = {"name": "fcn", "params": {"arch": "fcn32s", "width": 4, "epochs": 1,
                                     "batch_size": 2, "device": "cpu", "n_threads": 1}}  # fmt: skip
    row = run_config(synthetic_config(fcn), **dirs)[0]
    assert row["status"] == "ok", row.get("error")
    folders = list((dirs["runs_dir"] / "checkpoints").glob("fcn-*"))
    assert len(folders) == 1 and (folders[0] / "last.pt").is_file()
    # where the clone lives decides nothing: not in the row, not in the fingerprint
    assert "checkpoint_dir" not in row["all_params"]
    other = {
        "results_dir": dirs["results_dir"],
        "runs_dir": dirs["runs_dir"].with_name("elsewhere"),
    }
    again = run_config(synthetic_config(fcn), **other)[0]
    assert again["fingerprint"] == row["fingerprint"]  # reused: same row, same fingerprint


@pytest.mark.parametrize("content", ["{bad", "", "[1]", "\udcff"])
def test_an_unreadable_stored_row_is_named_and_recomputed(dirs, caplog, content):
    cfg = synthetic_config("class_prior")
    (row,) = run_config(cfg, **dirs)
    path = dirs["results_dir"] / "rows" / "quick" / "t" / "class_prior.seed0.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="bench.runner"):
        (again,) = run_config(cfg, **dirs)
    assert str(path) in caplog.text and "recomputing" in caplog.text
    assert json.loads(path.read_text())["miou"] == row["miou"] == again["miou"]
