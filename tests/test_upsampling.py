"""Upsampling layers: output shapes, initialisation, the transposed-convolution identity, and
the checkerboard metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deep.checkerboard import checkerboard_index, zoomed_score_figure
from deep.upsampling import (
    UPSAMPLING,
    BedOfNailsConv,
    MaxUnpool,
    MaxUnpoolConv,
    TransposedConv2,
    TransposedConv3,
    TransposedConv4,
    window_switches,
)


@pytest.mark.parametrize("name", sorted(UPSAMPLING))
@pytest.mark.parametrize("size", [(3, 5), (4, 4)])
def test_every_layer_doubles_height_and_width(name: str, size: tuple[int, int]) -> None:
    h, w = size
    features = torch.randn(2, 6, 2 * h, 2 * w)
    pooled, indices = F.max_pool2d(features, 2, 2, return_indices=True)
    scores = torch.randn(2, 5, h, w)
    out = UPSAMPLING[name](5)(scores, indices)
    assert out.shape == (2, 5, 2 * h, 2 * w)
    assert torch.isfinite(out).all()


def test_bilinear_initialised_4x4_deconvolution_is_bilinear_interpolation() -> None:
    x = torch.randn(1, 3, 6, 7)
    out = TransposedConv4(3)(x)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    # Identical away from the border (interpolation clamps there, the deconvolution pads zeros).
    torch.testing.assert_close(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])


def test_2x2_deconvolution_starts_as_nearest_and_3x3_interpolates() -> None:
    x = torch.randn(1, 2, 4, 4)
    nearest = F.interpolate(x, scale_factor=2, mode="nearest")
    torch.testing.assert_close(TransposedConv2(2)(x), nearest)
    out = TransposedConv3(2)(x)
    torch.testing.assert_close(out[..., ::2, ::2], x)  # even positions copy the input
    torch.testing.assert_close(out[..., 1:-1:2, ::2], (x[..., :-1, :] + x[..., 1:, :]) / 2)


def test_max_unpool_returns_values_to_the_encoders_argmax() -> None:
    features = torch.zeros(1, 3, 4, 4)
    features[:, :, 1, 0] = 5.0  # every channel's max of window (0, 0) is at row 1, col 0
    features[:, :2, 2, 3] = 5.0  # two of three channels pick (2, 3) in window (1, 1)
    _, indices = F.max_pool2d(features, 2, 2, return_indices=True)
    switch = window_switches(indices, (4, 4))
    assert switch[0, 0, 0, 0] == 1 * 4 + 0
    assert switch[0, 0, 1, 1] == 2 * 4 + 3
    out = MaxUnpool(2)(torch.ones(1, 2, 2, 2), indices)
    assert out[0, 0, 1, 0] == 1 and out[0, 0, 2, 3] == 1
    assert out.sum() == 2 * 4  # one value per window and channel, zeros elsewhere


def test_bed_of_nails_then_convolution_is_a_3x3_transposed_convolution() -> None:
    torch.manual_seed(0)
    layer = BedOfNailsConv(3)
    with torch.no_grad():
        layer.conv.weight.normal_()  # any kernel, not only the initial one
    x = torch.randn(2, 3, 5, 4)
    # conv_transpose2d's weight is (in, out, k, k) and is applied flipped.
    weight = layer.conv.weight.flip(-1, -2).transpose(0, 1)
    expected = F.conv_transpose2d(x, weight, layer.conv.bias, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(layer(x), expected)


def test_sparse_layers_leave_zeros_and_their_conv_variants_fill_them() -> None:
    features = torch.randn(1, 6, 8, 8)
    _, indices = F.max_pool2d(features, 2, 2, return_indices=True)
    scores = torch.rand(1, 4, 4, 4) + 1.0  # strictly positive: any zero output is a hole
    for sparse, dense in ((UPSAMPLING["bed_of_nails"], BedOfNailsConv),
                          (MaxUnpool, MaxUnpoolConv)):  # fmt: skip
        holes = (sparse(4)(scores, indices) == 0).float().mean().item()
        assert holes == pytest.approx(0.75)
        # Away from the border every output of the initial densifying layer is positive.
        assert (dense(4)(scores, indices)[..., 1:-1, 1:-1] > 0).all()


def conv_matrix(weight: torch.Tensor, size: tuple[int, int], stride: int, padding: int):
    """Dense matrix M with M @ x.ravel() == conv2d(x, weight).ravel(), built column by column."""
    h, w = size
    cin = weight.shape[1]
    columns = []
    for i in range(cin * h * w):
        basis = torch.zeros(cin * h * w, dtype=torch.float64)
        basis[i] = 1.0
        columns.append(
            F.conv2d(basis.view(1, cin, h, w), weight, stride=stride, padding=padding).ravel()
        )
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("kernel,padding", [(3, 1), (4, 1), (2, 0)])
def test_transposed_convolution_is_the_transpose_of_the_convolution_matrix(
    kernel: int, padding: int
) -> None:
    gen = torch.Generator().manual_seed(0)
    cin, cout, h, w, stride = 2, 3, 6, 8, 2
    weight = torch.randn(cout, cin, kernel, kernel, generator=gen, dtype=torch.float64)
    matrix = conv_matrix(weight, (h, w), stride, padding)
    oh = (h + 2 * padding - kernel) // stride + 1
    ow = (w + 2 * padding - kernel) // stride + 1
    assert matrix.shape == (cout * oh * ow, cin * h * w)
    y = torch.randn(cout * oh * ow, generator=gen, dtype=torch.float64)
    # output_padding recovers the rows/cols the strided convolution's floor dropped
    extra = (h + 2 * padding - kernel) % stride, (w + 2 * padding - kernel) % stride
    out = F.conv_transpose2d(
        y.view(1, cout, oh, ow), weight, stride=stride, padding=padding, output_padding=extra
    )
    torch.testing.assert_close(out.ravel(), matrix.T @ y)


def smooth_map(h: int = 64, w: int = 80) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.sin(xx / 9.0) + 0.02 * yy, np.cos(yy / 7.0) * 3.0])


def test_checkerboard_index_separates_checkered_from_smooth_maps() -> None:
    smooth = smooth_map()
    yy, xx = np.mgrid[0 : smooth.shape[1], 0 : smooth.shape[2]]
    checker = ((yy + xx) % 2 * 2 - 1).astype(float)
    assert checkerboard_index(smooth) < 0.02
    assert checkerboard_index(smooth + smooth.std() * checker) > 0.5
    assert checkerboard_index(smooth + 0.1 * smooth.std() * checker) > 0.05
    # a period-4 grid pattern (from an earlier x2 layer) is seen too
    grid = ((yy % 4 == 0) | (xx % 4 == 0)).astype(float)
    assert checkerboard_index(smooth + smooth.std() * grid) > 0.2


def test_checkerboard_index_of_real_layers_orders_nearest_and_bilinear() -> None:
    torch.manual_seed(0)
    coarse = F.interpolate(torch.randn(1, 2, 6, 8), scale_factor=2, mode="bilinear")
    up_bilinear = F.interpolate(coarse, scale_factor=8, mode="bilinear")[0].numpy()
    up_nearest = F.interpolate(coarse, scale_factor=8, mode="nearest")[0].numpy()
    # nearest neighbour leaves 8x8 blocks locked to the grid; bilinear does not
    assert checkerboard_index(up_nearest) > 3 * checkerboard_index(up_bilinear)


def test_zoomed_figure_is_written(tmp_path) -> None:  # noqa: ANN001
    path = zoomed_score_figure({"a": smooth_map()[0], "b": smooth_map()[1]}, tmp_path / "z.png")
    assert path.stat().st_size > 1000
