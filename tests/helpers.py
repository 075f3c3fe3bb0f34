"""Helpers shared by the method tests."""

from bench.metrics import ConfusionMatrix


def evaluate(method, ds):
    """Scores of ``method`` on every image of ``ds`` through the one evaluator."""
    cm = ConfusionMatrix(ds.n_classes, ds.ignore_index)
    for i in range(len(ds)):
        cm.update(method.predict(ds.image(i)), ds.native_label(i))
    return cm.scores()
