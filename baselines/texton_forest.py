"""Semantic texton forest (Shotton, Johnson & Cipolla, CVPR 2008), stage 1 and stage 1+2.

Stage 1 is a randomized decision forest acting directly on pixels: every split test compares one
or two CIELAB values in a patch around the pixel (value, sum, difference or absolute difference
of two pixels at offsets, in one channel), and every leaf holds a class distribution. Stage 2
(optional) is the paper's *bag of semantic textons*: the tree nodes that the pixels of a region
reach are its "textons"; histograms of them over rectangles placed around a pixel, together with
the region's average stage-1 class distribution (the paper's "region prior"), feed a second
forest. The *image-level prior* (ILP) predicts from the whole-image histogram which classes are
present and multiplies the pixel posteriors by those probabilities raised to a softening power.

How this maps onto scikit-learn, and why it is faithful
-------------------------------------------------------
The paper grows each node from a few hundred random split proposals (a random pixel test with a
random threshold) and keeps the one with the largest information gain. Here every tree is an
:class:`~sklearn.ensemble.ExtraTreesClassifier` tree (``criterion="entropy"``, i.e. information
gain) over a fixed random bank of ``n_features`` such pixel tests, computed on the fly from the
image with NumPy. Extra-trees draw ``max_features`` tests per node and, for each, one uniformly
random threshold, and keep the best: the paper's random proposals, except that the tests are
drawn from a large finite bank instead of an infinite family. With a bank of hundreds of tests
the difference is immaterial (every tree, and nearly every node, sees a different draw). Leaves
hold the (class-weighted) distribution of the training pixels that reach them, and the class
weights are inverse class frequencies, as the paper re-weights its leaf histograms. The second
stage's split tests in the paper ("count of texton t in rectangle r", "region prior of class c
in rectangle r") are likewise a random bank of rectangle/texton pairs read off integral images.

Departures, said plainly: the bag of semantic textons uses the nodes at one tree depth
(``texton_depth``) rather than the paper's whole node hierarchy with a pyramid-match kernel (the
full hierarchy would need tens of thousands of integral images); the second forest decides per
cell of ``cell_size`` pixels a side (rectangle sums are exact sums over cells, and the cell's
own mean stage-1 posterior is a feature), and its posteriors are interpolated bilinearly to the
pixels, which divides the cost of stage 2 by ``cell_size ** 2``; and the image-level prior is a
multi-output extra-trees classifier instead of the paper's one-vs-rest SVMs with a
pyramid-match kernel.

No stacking leakage: stage 2 and the image prior learn from stage-1 class distributions of
training images that the stage-1 forest producing them did not see (``stage2_folds`` forests,
each grown without one fold of consecutive images, so a fold holds whole stretches of a video),
as the superpixel auto-context does; trained on the final forest's own in-sample posteriors they
would learn to trust them far more than they deserve on new images. The textons of those images
are the final forest's nodes (node ids of one forest have no counterpart in another), so only
the class distributions are out-of-fold. The paper trains both stages on the same images.

Parameters were chosen on CamVid's val split at 180x240 (see the report of issue 4); on CamVid
the image prior does not help (nearly every class is in nearly every image), so it is off by
default.
"""

from __future__ import annotations

import logging

import numpy as np
from skimage.color import rgb2lab
from sklearn.ensemble import ExtraTreesClassifier
from tqdm import tqdm

from bench.method import SegmentationMethod, full_proba, sample_pixels

log = logging.getLogger(__name__)

#: Kinds of pixel test, in the order of the paper: value of A, A + B, A - B, |A - B|.
VALUE, SUM, DIFF, ABSDIFF = 0, 1, 2, 3


# -- stage 1: pixel tests ------------------------------------------------------------------------
def draw_pixel_tests(n: int, radius: int, rng: np.random.Generator) -> np.ndarray:
    """A random bank of ``n`` pixel tests in a ``(2 radius + 1)``-square patch.

    Returns
    -------
    bank : ndarray of int64, shape (n, 6)
        Columns: kind (:data:`VALUE`, :data:`SUM`, :data:`DIFF`, :data:`ABSDIFF`), CIELAB
        channel (0 = L, 1 = a, 2 = b), then the offsets (dy, dx) of pixel A and of pixel B.
    """
    bank = np.empty((n, 6), dtype=np.int64)
    bank[:, 0] = rng.integers(0, 4, n)
    bank[:, 1] = rng.integers(0, 3, n)
    bank[:, 2:] = rng.integers(-radius, radius + 1, (n, 4))
    return bank


def lab_planes(image: np.ndarray, radius: int) -> np.ndarray:
    """CIELAB channels of ``image``, reflect-padded by ``radius``: float32 (3, H + 2r, W + 2r)."""
    lab = rgb2lab(image).astype(np.float32).transpose(2, 0, 1)
    return np.pad(lab, ((0, 0), (radius, radius), (radius, radius)), mode="reflect")


def _combine(kind: int, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    if kind == VALUE:
        out[...] = a
    elif kind == SUM:
        np.add(a, b, out=out)
    else:
        np.subtract(a, b, out=out)
        if kind == ABSDIFF:
            np.abs(out, out=out)


def pixel_tests_dense(planes: np.ndarray, bank: np.ndarray, radius: int, rows: slice) -> np.ndarray:
    """Every test of ``bank`` at every pixel of image rows ``rows``.

    Each test is a shifted view of one padded plane, so a test costs one vectorised operation
    over the rows (no gathers). The result is test-major, and its transpose (a Fortran-ordered
    (n_pixels, n_tests) matrix) is what scikit-learn's trees read without a copy.

    Parameters
    ----------
    planes : ndarray, shape (3, H + 2r, W + 2r)
        From :func:`lab_planes`.
    bank : ndarray, shape (n_tests, 6)
    radius : int
    rows : slice
        Image rows (unpadded coordinates, step 1).

    Returns
    -------
    values : ndarray of float32, shape (n_tests, n_rows * W)
    """
    w = planes.shape[2] - 2 * radius
    y0, y1 = rows.start, rows.stop
    out = np.empty((len(bank), y1 - y0, w), dtype=np.float32)
    for j, (kind, ch, ay, ax, by, bx) in enumerate(bank.tolist()):
        plane = planes[ch]
        a = plane[y0 + radius + ay : y1 + radius + ay, radius + ax : radius + ax + w]
        b = plane[y0 + radius + by : y1 + radius + by, radius + bx : radius + bx + w]
        _combine(kind, a, b, out[j])
    return out.reshape(len(bank), -1)


def pixel_tests_at(planes: np.ndarray, bank: np.ndarray, radius: int, index: np.ndarray):
    """The tests of ``bank`` at the pixels ``index`` (flat indices into the unpadded image).

    Returns
    -------
    values : ndarray of float32, shape (len(index), n_tests)
    """
    _, hp, wp = planes.shape
    y, x = np.divmod(index, wp - 2 * radius)
    centre = (y + radius) * wp + (x + radius)  # flat index into a padded plane
    flat = planes.reshape(3, -1)
    kind, ch = bank[:, 0], bank[:, 1]
    a = flat[ch, centre[:, None] + bank[:, 2] * wp + bank[:, 3]]
    b = flat[ch, centre[:, None] + bank[:, 4] * wp + bank[:, 5]]
    out = np.where(kind == VALUE, a, np.where(kind == SUM, a + b, a - b))
    return np.where(kind == ABSDIFF, np.abs(out), out).astype(np.float32)


# -- stage 2: bag of semantic textons ------------------------------------------------------------
def texton_of_node(tree, depth: int, offset: int) -> tuple[np.ndarray, int]:  # noqa: ANN001
    """Texton id of every node of a fitted sklearn tree: its ancestor at ``depth``.

    A leaf shallower than ``depth`` is its own texton. Ids start at ``offset`` so that the
    textons of all trees of a forest are distinct.

    Returns
    -------
    texton : ndarray of int64, shape (n_nodes,)
    n_textons : int
    """
    t = tree.tree_
    left, right = t.children_left, t.children_right
    node_depth = np.zeros(t.node_count, dtype=np.int64)
    texton = np.full(t.node_count, -1, dtype=np.int64)
    # sklearn numbers every child after its parent, so one pass in node order reaches parents
    # first; the pass is over at most a few ten thousand nodes, once per fit.
    next_id = offset
    for node in range(t.node_count):
        is_leaf = left[node] == -1
        if texton[node] < 0 and (node_depth[node] == depth or is_leaf):
            texton[node] = next_id
            next_id += 1
        if not is_leaf:
            for child in (left[node], right[node]):
                node_depth[child] = node_depth[node] + 1
                texton[child] = texton[node]
    return texton, next_id - offset


def draw_rectangles(
    n: int, max_offset: float, max_size: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` random rectangles around a pixel, in fractions of image height and width.

    Returns
    -------
    rects : ndarray of float64, shape (n, 4)
        (top, left, bottom, right) relative to the pixel; sides are at least 1 % of the image.
    """
    centre = rng.uniform(-max_offset, max_offset, (n, 2))
    half = rng.uniform(0.005, max_size / 2, (n, 2))
    return np.concatenate([centre - half, centre + half], axis=1)


def integral_cells(cell: np.ndarray, n_cells: tuple[int, int], values: np.ndarray) -> np.ndarray:
    """Per-cell sums of pixel values, as a flat integral image over cells.

    Parameters
    ----------
    cell : ndarray of intp, shape (n_pixels,)
        Cell of every pixel.
    n_cells : (int, int)
        Cell grid (rows, columns).
    values : ndarray, shape (n_pixels, k)
        Values to sum (k channels).

    Returns
    -------
    integral : ndarray of float64, shape ((rows + 1) * (cols + 1), k)
        ``integral[y * (cols + 1) + x]`` is the sum over the cells above and left of (y, x).
    """
    hc, wc = n_cells
    sums = np.stack([np.bincount(cell, weights=v, minlength=hc * wc) for v in values.T], axis=1)
    integral = np.zeros((hc + 1, wc + 1, values.shape[1]))
    integral[1:, 1:] = sums.reshape(hc, wc, -1).cumsum(0).cumsum(1)
    return integral.reshape((hc + 1) * (wc + 1), -1)


def _span(centre: np.ndarray, lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell range [start, stop) of a rectangle side (fractions ``lo``..``hi`` of ``n`` cells)
    around every cell ``centre``, at least one cell long, clipped to the grid."""
    start = int(np.floor(lo * n))
    stop = max(int(np.ceil(hi * n)), start + 1)
    return np.clip(centre + start, 0, n), np.clip(centre + stop, 0, n)


class TextonForest(SegmentationMethod):
    """Semantic texton forest: a randomized forest on pixel tests, with optional second stage.

    Parameters
    ----------
    patch_size : int
        Side of the square patch the pixel tests look into (odd; pixels at working resolution).
    n_features : int
        Size of the random bank of pixel tests.
    max_features : int
        Tests proposed (with one random threshold each) per node: the paper's split proposals.
    n_estimators, max_depth, min_samples_leaf : int
        Stage-1 forest (:class:`~sklearn.ensemble.ExtraTreesClassifier`, entropy criterion).
    pixels_per_image : int
        Labelled pixels sampled uniformly from each training image for stage 1.
    class_weight : str or None
        ``"balanced"``: inverse class frequency weights (the paper's re-weighting), in both
        stages, so that pole, sign, pedestrian... are not drowned by road and sky.
    stage2 : bool
        Add the bag-of-semantic-textons stage (a second forest on region features).
    texton_depth : int
        Tree depth whose nodes are the semantic textons of stage 2 and of the image prior.
    n_rectangles : int
        Random rectangles around each pixel; the stage-1 class distribution averaged over each
        one is a feature (the paper's region prior).
    n_texton_features : int
        Random (rectangle, texton) pairs whose normalised count is a feature.
    rect_max_offset, rect_max_size : float
        Largest rectangle centre offset and side, in fractions of the image side.
    cell_size : int
        Stage-2 region sums are over cells of this many pixels a side.
    stage2_estimators, stage2_max_depth, stage2_min_samples_leaf, stage2_max_features :
        Second forest (extra-trees, entropy criterion).
    stage2_pixels_per_image : int
        Labelled pixels per training image for stage 2.
    stage2_folds : int
        Stage 2 and the image prior train on out-of-fold stage-1 distributions from this many
        forests, each grown without one fold of consecutive training images (see the module
        doc); 1 trains them on the final forest's in-sample distributions, as the paper does.
    image_prior_power : float
        Exponent of the image-level prior, P(class in image | whole-image bag of textons),
        that multiplies the posteriors (0 turns it off; a power below 1 softens it). It works
        with stage 1 alone or with stage 2.
    chunk_pixels : int
        Pixels whose features are held at once in prediction (bounds memory).
    n_jobs : int
        Threads of the forests.
    random_state : int
    """

    def __init__(
        self,
        patch_size: int = 9,
        n_features: int = 400,
        max_features: int = 40,
        n_estimators: int = 8,
        max_depth: int | None = 16,
        min_samples_leaf: int = 10,
        pixels_per_image: int = 1000,
        class_weight: str | None = "balanced",
        stage2: bool = False,
        texton_depth: int = 6,
        n_rectangles: int = 24,
        n_texton_features: int = 300,
        rect_max_offset: float = 0.3,
        rect_max_size: float = 0.4,
        cell_size: int = 2,
        stage2_estimators: int = 12,
        stage2_max_depth: int | None = 16,
        stage2_min_samples_leaf: int = 20,
        stage2_max_features: int | float | str = "sqrt",
        stage2_pixels_per_image: int = 1000,
        stage2_folds: int = 5,
        image_prior_power: float = 0.0,
        chunk_pixels: int = 65536,
        n_jobs: int = -1,
        random_state: int = 0,
    ) -> None:
        self.patch_size = patch_size
        self.n_features = n_features
        self.max_features = max_features
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.pixels_per_image = pixels_per_image
        self.class_weight = class_weight
        self.stage2 = stage2
        self.texton_depth = texton_depth
        self.n_rectangles = n_rectangles
        self.n_texton_features = n_texton_features
        self.rect_max_offset = rect_max_offset
        self.rect_max_size = rect_max_size
        self.cell_size = cell_size
        self.stage2_estimators = stage2_estimators
        self.stage2_max_depth = stage2_max_depth
        self.stage2_min_samples_leaf = stage2_min_samples_leaf
        self.stage2_max_features = stage2_max_features
        self.stage2_pixels_per_image = stage2_pixels_per_image
        self.stage2_folds = stage2_folds
        self.image_prior_power = image_prior_power
        self.chunk_pixels = chunk_pixels
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, dataset, val_dataset=None) -> TextonForest:  # noqa: ANN001
        """Grow stage 1 (and stage 2, the image prior) on ``dataset``; ``val_dataset`` unused."""
        if not isinstance(self.stage2_folds, int) or self.stage2_folds < 1:
            raise ValueError(f"stage2_folds must be an integer >= 1, got {self.stage2_folds!r}")
        rng = np.random.default_rng(self.random_state)
        self.n_classes_ = dataset.n_classes
        self.radius_ = self.patch_size // 2
        self.tests_ = draw_pixel_tests(self.n_features, self.radius_, rng)
        samples = self._fit_stage1(dataset, rng)
        if self.stage2 or self.image_prior_power > 0:
            self._fit_textons()
            self._fit_stage2(dataset, rng, self._out_of_fold(samples, rng))
        return self

    def _forest(self, n_estimators, max_depth, min_samples_leaf, max_features, seed):  # noqa: ANN001, ANN202
        return ExtraTreesClassifier(
            n_estimators=n_estimators,
            criterion="entropy",  # information gain, as in the paper
            max_depth=max_depth,
            min_samples_leaf=min_samples_leaf,
            max_features=max_features,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=int(seed),
        )

    def _fit_stage1(self, dataset, rng: np.random.Generator) -> list[tuple]:  # noqa: ANN001
        """Grow the stage-1 forest; the (features, targets) sampled from each image."""
        samples = []
        for image, label, _ in tqdm(dataset, desc="texton forest: stage-1 samples", leave=False):
            index = sample_pixels(label, self.pixels_per_image, dataset.ignore_index, rng)
            planes = lab_planes(image, self.radius_)
            samples.append(
                (pixel_tests_at(planes, self.tests_, self.radius_, index), label.ravel()[index])
            )
        x = np.concatenate([f for f, _ in samples])
        y = np.concatenate([t for _, t in samples])
        log.info("stage 1: %d pixels x %d tests, %d trees", *x.shape, self.n_estimators)
        self.forest_, self.leaf_proba_ = self._grow_stage1(x, y, rng.integers(2**31))
        return samples

    def _grow_stage1(self, x: np.ndarray, y: np.ndarray, seed: int) -> tuple:
        """A stage-1 forest on ``(x, y)`` and its trees' leaf distributions."""
        forest = self._forest(
            self.n_estimators,
            self.max_depth,
            self.min_samples_leaf,
            min(self.max_features, self.n_features),
            seed,
        ).fit(x, y)
        # Each tree's leaf distributions, normalised, spread over all classes: averaging them
        # over the leaves a pixel reaches is the forest's posterior (and what stage 2 reads).
        leaf_proba = [
            full_proba(t.tree_.value[:, 0, :] / t.tree_.value[:, 0, :].sum(1, keepdims=True),
                       forest.classes_, self.n_classes_)
            for t in forest.estimators_
        ]  # fmt: skip
        return forest, leaf_proba

    def _out_of_fold(self, samples: list[tuple], rng: np.random.Generator) -> list[tuple]:
        """For each training image, the (forest, leaf distributions) that did not see it."""
        n = len(samples)
        if self.stage2_folds == 1 or n < 2:
            return [(self.forest_, self.leaf_proba_)] * n
        owner: list[tuple] = [()] * n
        for fold in np.array_split(np.arange(n), min(self.stage2_folds, n)):
            keep = np.setdiff1d(np.arange(n), fold)
            x = np.concatenate([samples[i][0] for i in keep])
            y = np.concatenate([samples[i][1] for i in keep])
            grown = self._grow_stage1(x, y, rng.integers(2**31))
            for i in fold:
                owner[i] = grown
        log.info("stage 1: %d out-of-fold forests for stage 2", min(self.stage2_folds, n))
        return owner

    def _fit_textons(self) -> None:
        self.node_texton_, offset = [], 0
        for tree in self.forest_.estimators_:
            texton, n = texton_of_node(tree, self.texton_depth, offset)
            self.node_texton_.append(texton)
            offset += n
        self.n_textons_ = offset

    def _fit_stage2(self, dataset, rng: np.random.Generator, owners: list[tuple]) -> None:  # noqa: ANN001
        self.rects_ = draw_rectangles(
            self.n_rectangles, self.rect_max_offset, self.rect_max_size, rng
        )
        pairs = rng.integers(0, [self.n_rectangles, self.n_textons_], (self.n_texton_features, 2))
        self.texton_pairs_ = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        # Integral-image channels: 0 = pixel count, 1..C = posterior, then each texton in use.
        used = np.unique(self.texton_pairs_[:, 1])
        self.n_used_textons_ = len(used)
        self.texton_channel_ = np.full(self.n_textons_, -1, dtype=np.int64)
        self.texton_channel_[used] = np.arange(len(used))
        first = 1 + self.n_classes_
        self.rect_channels_ = [
            np.concatenate(
                [
                    np.arange(first),
                    first
                    + self.texton_channel_[self.texton_pairs_[self.texton_pairs_[:, 0] == r, 1]],
                ]
            )
            for r in range(self.n_rectangles)
        ]
        features, targets, histograms, present = [], [], [], []
        desc = "texton forest: stage-2 samples"
        for i, (image, label, _) in enumerate(tqdm(dataset, desc=desc, leave=False)):
            proba, texton = self._stage1_maps(image)
            forest, leaf_proba = owners[i]
            if forest is not self.forest_:  # the distributions of a forest that did not see it
                proba = self._posterior(self._leaves(image, forest), leaf_proba)
            histograms.append(self._image_histogram(proba, texton))
            present.append(np.bincount(label.ravel(), minlength=256)[: self.n_classes_] > 0)
            if self.stage2:
                index = sample_pixels(
                    label, self.stage2_pixels_per_image, dataset.ignore_index, rng
                )
                cells = self._cell_features(proba, texton, label.shape)
                features.append(cells[self._cell_of(index, label.shape[1])])
                targets.append(label.ravel()[index])
        if self.stage2:
            x, y = np.concatenate(features), np.concatenate(targets)
            log.info("stage 2: %d pixels x %d features", *x.shape)
            self.forest2_ = self._forest(
                self.stage2_estimators,
                self.stage2_max_depth,
                self.stage2_min_samples_leaf,
                self.stage2_max_features,
                rng.integers(2**31),
            ).fit(x, y)
        if self.image_prior_power > 0:
            # Multi-label: one output per class, "is the class in the image?".
            self.image_prior_ = ExtraTreesClassifier(
                n_estimators=100, min_samples_leaf=2, n_jobs=self.n_jobs,
                random_state=int(rng.integers(2**31)),
            ).fit(np.stack(histograms), np.stack(present).astype(np.int64))  # fmt: skip

    # -- stage-1 maps ----------------------------------------------------------------------------
    def _leaves(self, image: np.ndarray, forest=None) -> np.ndarray:  # noqa: ANN001
        """Leaf reached in every tree (of ``forest``, default the stage-1 forest) by every pixel,
        int64 (H*W, n_trees), chunked by rows."""
        forest = self.forest_ if forest is None else forest
        h, w = image.shape[:2]
        planes = lab_planes(image, self.radius_)
        step = max(1, self.chunk_pixels // w)
        leaves = []
        for y in range(0, h, step):
            rows = slice(y, min(y + step, h))
            tests = pixel_tests_dense(planes, self.tests_, self.radius_, rows)
            leaves.append(forest.apply(tests.T))
        return np.concatenate(leaves)

    @staticmethod
    def _posterior(leaves: np.ndarray, leaf_proba: list[np.ndarray]) -> np.ndarray:
        """Mean over the trees of the leaf distributions ``leaves`` (H*W, n_trees) reach."""
        proba = leaf_proba[0][leaves[:, 0]]
        for t in range(1, leaves.shape[1]):
            proba += leaf_proba[t][leaves[:, t]]
        return proba / leaves.shape[1]

    def _stage1_maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Stage-1 posterior (H*W, C) float32 and, if needed, textons (H*W, n_trees)."""
        leaves = self._leaves(image)
        proba = self._posterior(leaves, self.leaf_proba_)
        if not hasattr(self, "node_texton_"):
            return proba, None
        texton = np.stack([m[leaves[:, t]] for t, m in enumerate(self.node_texton_)], axis=1)
        return proba, texton

    def _image_histogram(self, proba: np.ndarray, texton: np.ndarray) -> np.ndarray:
        """Whole-image bag of semantic textons (per-tree normalised) and mean posterior."""
        counts = np.bincount(texton.ravel(), minlength=self.n_textons_) / len(texton)
        return np.concatenate([counts, proba.mean(0)])

    # -- stage-2 features ------------------------------------------------------------------------
    def _cell_features(
        self, proba: np.ndarray, texton: np.ndarray, shape: tuple[int, int]
    ) -> np.ndarray:
        """Region features of every cell: (n_cells, (1 + n_rectangles) * C + n_texton_features).

        The first C are the cell's own mean stage-1 posterior. Rectangle sums are read off an
        integral image over cells whose channels are the pixel count, the stage-1 posterior and
        the counts of the textons that some feature uses; a rectangle is clipped to the image
        and its sums divided by the pixels it covers, and a rectangle wholly outside the image
        reads -1 (which tells the forest where in the image
        the pixel is, as the paper's rectangles do).
        """
        h, w = shape
        s, c = self.cell_size, self.n_classes_
        hc, wc = -(-h // s), -(-w // s)
        n_cells = hc * wc
        yy, xx = np.divmod(np.arange(h * w), w)
        cell = (yy // s) * wc + xx // s
        # Channel-first sums per cell: count, posterior, then only the textons in use (one
        # bincount over (channel, cell) pairs), so that each rectangle reads compact planes.
        channel = self.texton_channel_[texton]
        used = channel >= 0
        key = channel[used] * n_cells + np.broadcast_to(cell[:, None], channel.shape)[used]
        sums = np.concatenate(
            [
                np.bincount(cell, minlength=n_cells)[None].astype(np.float64),
                np.stack([np.bincount(cell, weights=p, minlength=n_cells) for p in proba.T]),
                np.bincount(key, minlength=n_cells * self.n_used_textons_).reshape(-1, n_cells),
            ]
        )
        # float32 halves the memory traffic of the loop below; counts stay exact (< 2**24) and
        # a region's mean posterior is off by at most a few 1e-3.
        integral = np.zeros((len(sums), hc + 1, wc + 1), dtype=np.float32)
        inner = integral[:, 1:, 1:]
        np.cumsum(sums.reshape(-1, hc, wc), axis=1, dtype=np.float32, out=inner)
        np.cumsum(inner, axis=2, out=inner)

        # Feature-major, so that every rectangle writes contiguous planes; its transpose is the
        # (n_cells, n_features) matrix, which sklearn's trees read without a copy.
        cy, cx = np.arange(hc), np.arange(wc)
        out = np.empty(((1 + self.n_rectangles) * c + len(self.texton_pairs_), hc, wc), np.float32)
        out[:c] = (sums[1 : 1 + c] / np.maximum(sums[0], 1.0)).reshape(c, hc, wc)
        col = (1 + self.n_rectangles) * c
        for r, (top, left, bottom, right) in enumerate(self.rects_):
            y0, y1 = _span(cy, top, bottom, hc)
            x0, x1 = _span(cx, left, right, wc)
            # A rectangle has the same shape around every cell, so its corners are one row and
            # one column index per cell row / column: row and column takes, no 2-D gathers.
            chans = self.rect_channels_[r][:, None]
            rows = integral[chans, y1] - integral[chans, y0]
            box = rows[:, :, x1] - rows[:, :, x0]  # (channels, hc, wc)
            area = box[0]
            inside = area > 0
            np.divide(box[1:], np.where(inside, area, 1.0), out=box[1:])
            box[1:, ~inside] = -1.0
            k = len(box) - 1 - c
            out[(r + 1) * c : (r + 2) * c] = box[1 : 1 + c]
            out[col : col + k] = box[1 + c :]
            col += k
        out = out.reshape(len(out), n_cells).T
        return out

    def _cell_of(self, index: np.ndarray, width: int) -> np.ndarray:
        """Cell of each pixel ``index`` (flat, image of ``width`` columns)."""
        s = self.cell_size
        y, x = np.divmod(index, width)
        return (y // s) * -(-width // s) + x // s

    # -- prediction ------------------------------------------------------------------------------
    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        proba, texton = self._stage1_maps(image)
        if self.stage2:
            posterior = self._stage2_posterior(proba, texton, (h, w))
        else:
            posterior = proba
        if self.image_prior_power > 0:
            posterior = posterior * self._image_prior(proba, texton)[None, :]
        posterior = posterior.astype(np.float32)
        posterior /= np.maximum(posterior.sum(1, keepdims=True), 1e-12)
        return posterior.reshape(h, w, self.n_classes_)

    def _stage2_posterior(
        self, proba: np.ndarray, texton: np.ndarray, shape: tuple[int, int]
    ) -> np.ndarray:
        """Second forest's posterior per cell, bilinearly interpolated to pixels (H*W, C).

        The second forest decides per cell rather than per pixel: the features of all pixels
        of a cell would be the same but for their own stage-1 posterior, and deciding per cell
        divides the cost of the second stage by ``cell_size ** 2``.
        """
        h, w = shape
        s = self.cell_size
        hc, wc = -(-h // s), -(-w // s)
        cells = self._cell_features(proba, texton, shape)
        post = full_proba(
            self.forest2_.predict_proba(cells), self.forest2_.classes_, self.n_classes_
        )
        if s > 1:
            # Bilinear, cell centres at the centres of their pixel blocks. torch rather than
            # scipy.ndimage.zoom (same values): about 3 times faster on this small map.
            import torch
            import torch.nn.functional as F

            grid = torch.from_numpy(post.reshape(hc, wc, -1).transpose(2, 0, 1).copy())[None]
            post = F.interpolate(grid, scale_factor=s, mode="bilinear", align_corners=False)
            post = post[0].numpy().transpose(1, 2, 0)
        return post.reshape(hc * s, wc * s, -1)[:h, :w].reshape(h * w, -1)

    def _image_prior(self, proba: np.ndarray, texton: np.ndarray) -> np.ndarray:
        """P(class present | whole-image histogram) ** power, floored so no class is erased."""
        hist = self._image_histogram(proba, texton)[None, :]
        present = np.ones(self.n_classes_)
        for c, p in enumerate(self.image_prior_.predict_proba(hist)):
            classes = self.image_prior_.classes_[c]
            present[c] = p[0, classes == 1].sum() if (classes == 1).any() else 0.0
        return np.maximum(present, 1e-3) ** self.image_prior_power
