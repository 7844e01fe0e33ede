"""CellProfiler-style per-cell features on drawn cells of known size and shape, and DMSO standardisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molwm.evaluation.cell_features import (feature_names, measure_cells, normalize_to_controls, segment,
                                       site_profile)

pytestmark = pytest.mark.unit


def _site(rng=None, size=64):
    """Two cells: a round nucleus of radius 5 and an elliptical one (semi-axes 7 and 3.5), each in a disc of
    cytoplasm of radius 12, on a background of 100 counts."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    img = np.full((5, size, size), 100.0)
    for (cy, cx), (a, b) in (((18, 18), (5, 5)), ((44, 44), (7, 3.5))):
        nucleus = ((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2 <= 1
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 <= 144
        img[0] += 2000 * nucleus
        img[1:] += 800 * cell[None] * (1 + 0.5 * np.sin(xx / 1.5))[None]
    if rng is not None:
        img += rng.normal(0, 5, img.shape)
    return img


def test_shapes_of_drawn_cells():
    cells = measure_cells(_site()).sort_values("Nuclei_AreaShape_Eccentricity").reset_index(drop=True)
    assert len(cells) == 2 and list(cells.columns) == feature_names()
    area = cells["Nuclei_AreaShape_Area"].to_numpy()
    np.testing.assert_allclose(area, [np.pi * 25, np.pi * 7 * 3.5], rtol=0.12)
    ff = cells["Nuclei_AreaShape_FormFactor"]
    assert abs(ff[0] - 1.0) < 0.25 and ff[1] < ff[0]  # a digital disc of radius 5; the ellipse is less round
    assert cells["Nuclei_AreaShape_Eccentricity"][0] < 0.3
    assert cells["Nuclei_AreaShape_Eccentricity"][1] == pytest.approx(np.sqrt(1 - 0.25), abs=0.08)
    assert cells["Nuclei_AreaShape_MajorAxisLength"][1] == pytest.approx(14, rel=0.1)
    np.testing.assert_allclose(cells["Cells_AreaShape_Area"], np.pi * 144, rtol=0.1)
    fracs = cells[[f"Cells_RadialDistribution_FracAtD_ER_{b}of4" for b in range(1, 5)]].sum(1)
    np.testing.assert_allclose(fracs, 1.0)
    assert (cells["Nuclei_Neighbors_FirstClosestDistance"] > 30).all()
    assert (cells["Nuclei_Neighbors_NumberOfNeighbors"] == 0).all()


def test_gain_moves_intensities_only():
    a, b = measure_cells(_site()), measure_cells(2.0 * _site())
    intensity = [c for c in a.columns if "_Intensity_" in c and "MassDisplacement" not in c]
    rest = [c for c in a.columns if c not in intensity]
    pd.testing.assert_frame_equal(a[rest], b[rest], rtol=1e-6)
    np.testing.assert_allclose(b["Nuclei_Intensity_MeanIntensity_DNA"], 2 * a["Nuclei_Intensity_MeanIntensity_DNA"])


def test_empty_site_and_profile():
    flat = np.full((5, 32, 32), 100.0)
    nuclei, cells = segment(flat)
    assert not nuclei.any() and not cells.any()
    prof = site_profile(flat)
    assert prof["Image_Count_Cells"] == 0 and np.isnan(prof["Nuclei_AreaShape_Area"])
    prof = site_profile(_site(np.random.default_rng(0)))
    assert prof["Image_Count_Cells"] == 2 and len(prof) == len(feature_names()) + 1


def test_normalize_to_controls_by_hand():
    frame = pd.DataFrame({"f": [1.0, 3.0, 5.0, 10.0, 20.0, 40.0], "const": [1.0] * 6})
    plate = ["p1", "p1", "p1", "p2", "p2", "p2"]
    ctl = [True, True, False, True, True, False]
    out = normalize_to_controls(frame, plate, ctl)
    assert list(out.columns) == ["f"]  # constant in the controls: dropped
    # p1 controls 1, 3: mean 2, SD 1; p2 controls 10, 20: mean 15, SD 5
    np.testing.assert_allclose(out["f"], [-1, 1, 3, -1, 1, 5])
    with pytest.raises(ValueError):
        normalize_to_controls(frame, plate, [False] * 6)
