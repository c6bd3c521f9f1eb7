"""Grid and SLIC superpixels: ids, boundaries, connectivity, determinism, batch consistency, errors."""
from __future__ import annotations

import pytest
import torch

from propex.perturbation.superpixels import grid_superpixels, rgb_to_lab, slic_superpixels

ndimage = pytest.importorskip("scipy.ndimage")




def regions_image(n: int = 2, size: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An RGB image made of 4 flat colour regions (with slight noise) and its region map."""
    gen = torch.Generator().manual_seed(seed)
    region = torch.zeros(size, size, dtype=torch.long)
    region[:, size // 3:] = 1
    region[size // 2:, :] += 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    region[(yy - 10) ** 2 + (xx - 34) ** 2 < 49] = 3                      # a disc across a boundary
    palette = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9], [0.9, 0.9, 0.2]])
    img = palette[region].permute(2, 0, 1).unsqueeze(0).repeat(n, 1, 1, 1)
    return (img + 0.02 * torch.randn(img.shape, generator=gen)).clamp(0, 1), region


def test_grid_ids_are_row_major_cells():
    ids = grid_superpixels(torch.zeros(2, 3, 5, 7), 3)
    assert ids.shape == (1, 1, 5, 7) and ids.dtype == torch.long
    yy, xx = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    assert torch.equal(ids[0, 0], (yy // 3) * 3 + xx // 3)               # 2 x 3 cells, border cells smaller
    assert torch.equal(grid_superpixels((4, 6), (2, 3))[0, 0], (yy[:4, :6] // 2) * 2 + xx[:4, :6] // 3)
    assert torch.equal(grid_superpixels((10,), 4)[0, 0], torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]))
    with pytest.raises(ValueError, match="size"):
        grid_superpixels((4, 6), 0)
    with pytest.raises(ValueError, match="larger than"):
        grid_superpixels((4, 6), 5)
    with pytest.raises(ValueError, match=r"\[N, C, \*spatial\]"):
        grid_superpixels(torch.zeros(4, 6), 2)


def test_slic_follows_colour_boundaries_and_is_connected():
    img, region = regions_image()
    seg = slic_superpixels(img, n_segments=16, compactness=10.0)
    assert seg.shape == (2, 1, 48, 48) and seg.dtype == torch.long
    labels = seg[0, 0]
    n_seg = int(labels.max()) + 1
    assert torch.equal(torch.unique(labels), torch.arange(n_seg))         # consecutive ids 0..M-1
    assert 8 <= n_seg <= 32                                                # about n_segments
    misplaced = 0
    for k in range(n_seg):
        counts = torch.bincount(region[labels == k], minlength=4)
        misplaced += int(counts.sum() - counts.max())
        _, n_parts = ndimage.label((labels == k).numpy())                 # 4-connected
        assert n_parts == 1, f"segment {k} has {n_parts} parts"
    assert misplaced <= 0.01 * labels.numel()                              # segments do not straddle regions


def test_slic_batch_equals_single_samples_and_is_deterministic():
    a, _ = regions_image(1, seed=1)
    b = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    both = slic_superpixels(torch.cat([a, b]), n_segments=20)
    assert torch.equal(both[0], slic_superpixels(a, n_segments=20)[0])
    assert torch.equal(both[1], slic_superpixels(b, n_segments=20)[0])
    assert torch.equal(both, slic_superpixels(torch.cat([a, b]), n_segments=20))


def test_slic_compactness_trades_colour_for_regular_shapes():
    img = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    grid_like = slic_superpixels(img, n_segments=16, compactness=1e4)[0, 0]
    # with a huge compactness the clustering is purely spatial: 4 x 4 equal cells
    cells = grid_superpixels((40, 40), 10)[0, 0]
    assert torch.equal(grid_like, cells)
    loose = slic_superpixels(img, n_segments=16, compactness=0.1, enforce_connectivity=False)[0, 0]
    assert not torch.equal(loose, cells)


def test_slic_lab_conversion_and_channels():
    img, region = regions_image(1)
    lab = rgb_to_lab(torch.tensor([1.0, 1.0, 1.0]).reshape(1, 3, 1, 1))
    torch.testing.assert_close(lab.flatten(), torch.tensor([100.0, 0.0, 0.0]), atol=1e-2, rtol=0)
    seg = slic_superpixels(img, n_segments=16, convert_lab=True)[0, 0]
    misplaced = sum(int(torch.bincount(region[seg == k], minlength=4).sum()
                        - torch.bincount(region[seg == k], minlength=4).max()) for k in range(int(seg.max()) + 1))
    assert misplaced <= 0.01 * seg.numel()
    gray = slic_superpixels(img[:, :1], n_segments=9)                      # any number of channels
    assert gray.shape == (1, 1, 48, 48)
    with pytest.raises(ValueError, match="RGB"):
        slic_superpixels(img[:, :2], convert_lab=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_segments=0), "n_segments"),
    (dict(compactness=-1.0), "compactness"),
    (dict(max_iter=-1), "max_iter"),
    (dict(min_size_factor=float("nan")), "min_size_factor"),
])
def test_slic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        slic_superpixels(torch.rand(1, 3, 8, 8), **kwargs)


def test_slic_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        slic_superpixels(torch.rand(3, 8, 8))
    bad = torch.rand(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        slic_superpixels(bad)
