"""The method contract (bench.contract) over every registered method, and against broken ones."""

from __future__ import annotations

import re

import fake_methods as fake
import pytest

from bench.contract import check_method, method_checks, synthetic_datasets
from bench.methods import METHODS, build_method

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small, fast parameters per registered method: the contract is about the interface, not about
#: learning well, so a few trees, a width-4 network and one epoch do. A method registered in
#: bench.methods without an entry here fails its contract test.
SMALL: dict[str, dict] = {
    "class_prior": {},
    "colour_forest": {"n_estimators": 3, "pixels_per_image": 200, "n_jobs": 1},
    # stage 2 on: its cell grid must be cropped back on the odd sizes
    "texton_forest": {
        "n_estimators": 2, "max_depth": 8, "n_features": 100, "max_features": 10,
        "pixels_per_image": 200, "stage2": True, "stage2_estimators": 2, "n_rectangles": 6,
        "n_texton_features": 20, "stage2_pixels_per_image": 200, "n_jobs": 1,
    },
    "superpixel": {"n_segments": 60, "n_estimators": 5, "n_jobs": 1},
    "superpixel_graph_cut": {
        "superpixel": {"n_segments": 60, "n_estimators": 5, "n_jobs": 1},
        "weights": [0.0, 1.0], "tune_images": 2,
    },
    "superpixel_relative_location": {
        "superpixel": {"n_segments": 60, "n_estimators": 5, "n_jobs": 1},
        "grid": [6, 8], "weights": [0.0, 1.0], "tune_images": 2,
    },
    # a stage: refines an already fitted method, as the runner builds it ("estimator" names
    # the registered method, fitted here with its own small parameters)
    "dense_crf": {
        "estimator": "class_prior", "prefit": True, "n_iter": 2, "tune_images": 2,
        "tune_grid": {"compat_bilateral": [3.0, 10.0]},
    },
    # stride 3: the interpolation between sampled crops runs on the odd sizes
    "sliding_window": {
        "patch_size": 32, "channels": (4, 4, 4), "hidden": 8, "epochs": 1,
        "crops_per_epoch": 128, "train_batch_size": 64, "candidates_per_class": 20,
        "val_crops_per_class": 5, "stride": 3, "checkpoint_dir": "TMP", "device": "cpu",
    },
    # reuse_checkpoint=False: the second fit of check_seeded trains again instead of loading
    "patch_fcn": {
        "patch_size": 32, "channels": (4, 4, 4), "hidden": 8, "epochs": 1,
        "crops_per_epoch": 128, "train_batch_size": 64, "candidates_per_class": 20,
        "val_crops_per_class": 5, "reuse_checkpoint": False, "checkpoint_dir": "TMP",
        "device": "cpu",
    },
    # resume=False: likewise, the second fit retrains rather than loading the first one's
    "fcn": {
        "arch": "fcn8s", "width": 4, "epochs": 1, "batch_size": 3, "crop": [32, 32],
        "device": "cpu", "n_threads": 1, "resume": False,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return synthetic_datasets()


def small_method(name: str, train, tmp_path):  # noqa: ANN001, ANN201
    """Registered method ``name`` built with its small parameters."""
    assert name in SMALL, (
        f"method {name!r} is registered in bench.methods.METHODS but has no small parameters "
        "in tests/test_contract.py SMALL: add some so that the contract suite covers it"
    )
    params = dict(SMALL[name])
    if params.get("checkpoint_dir") == "TMP":
        params["checkpoint_dir"] = str(tmp_path / "checkpoints")
    if isinstance(params.get("estimator"), str):
        inner = params["estimator"]
        params["estimator"] = small_method(inner, train, tmp_path).fit(train)
    return build_method(name, params)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_passes_the_contract(name, data, tmp_path) -> None:
    train, val = data
    method = small_method(name, train, tmp_path)
    names = [check_name for check_name, _ in method_checks(method, train=train, val=val)]
    # methods taking a seed are checked for it
    assert ("check_seeded" in names) == ("random_state" in method.get_params())
    check_method(method, train=train, val=val)


def test_small_parameters_are_for_registered_methods_only() -> None:
    assert set(SMALL) <= set(METHODS), set(SMALL) - set(METHODS)


def test_sound_fakes_pass_and_the_given_instance_stays_unfitted(data) -> None:
    train, val = data
    seeded, oracle = fake.Seeded(random_state=3), fake.Oracle()
    check_method(seeded, train=train, val=val)
    check_method(oracle, train=train, val=val)
    assert not hasattr(seeded, "class_") and not hasattr(oracle, "n_classes_")
    assert [n for n, _ in method_checks(oracle, train=train, val=val)] == [
        "check_init", "check_clone", "check_fit", "check_predict_proba", "check_predict",
        "check_input_unchanged",
    ]  # fmt: skip


#: (broken method, the check it must fail, what the message must say)
BROKEN = [
    (fake.LearnsInInit, "check_init", r"__init__ sets learned attribute\(s\) \['classes_'\]"),
    (fake.ConvertsParam, "check_init", r"does not store parameter\(s\) \['sizes'\] unchanged"),
    (fake.NotSelf, "check_fit", "fit must return self, returned NoneType"),
    (fake.BadShape, "check_fit", "fit set no learned attribute"),
    (fake.Unnormalised, "check_predict_proba", "on a 48x64 image: .*rows must sum to 1"),
    # fine on the first two images: the third one (45x31) is NaN
    (fake.NaNLater, "check_predict_proba", "on a 45x31 image: .*NaN or inf"),
    (fake.Negative, "check_predict_proba", r"negative probabilities \(min -0.5\)"),
    (fake.HalfPrecision, "check_predict_proba", "must be float32 or float64, got float16"),
    (fake.NotArgmax, "check_predict", r"differs from argmax\(predict_proba\) on 3072 pixels"),
    (fake.Mutates, "check_input_unchanged", r"predict_proba modified \d+ pixels of its 48x64"),
    (fake.Unseeded, "check_seeded", "two fits with random_state=0 differ by up to"),
    (lambda: fake.Boom(where="predict"), "check_predict_proba", "raised RuntimeError: boom"),
]


@pytest.mark.parametrize(("make", "check", "message"), BROKEN)
def test_the_contract_catches_a_broken_method(make, check, message, data) -> None:
    """Each fake passes every check before the one its fault breaks, and fails that one."""
    train, val = data
    method = make()
    prefix = re.escape(f"{check} ({type(method).__name__}): ")
    with pytest.raises(AssertionError, match=f"^{prefix}.*{message}"):
        check_method(method, train=train, val=val)


def test_bad_shape_fails_the_probability_check_on_its_own(data) -> None:
    # BadShape learns nothing, so check_method stops at check_fit; run the one check alone
    train, val = data
    checks = dict(method_checks(fake.BadShape(), train=train, val=val))
    with pytest.raises(
        AssertionError, match=r"must return an array \(48, 64, 4\), got \(2, 2, 2\)"
    ):
        checks["check_predict_proba"]()


def test_fit_must_not_write_into_the_training_images() -> None:
    train, val = synthetic_datasets()  # its own copy: this fake corrupts the images it gets
    with pytest.raises(AssertionError, match=r"^check_fit .*modified the training image\(s\)"):
        check_method(fake.MutatesTraining(), train=train, val=val)
