"""The lab's nuisance knob: surface detail independent of the biology, readable through by cell features,
and the real-layout readers reading the new output unchanged."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from molwm.sim import generate_lab, render_site
from molwm.sim.nuisance import parse_nuisance
from molwm.sim.render import RenderParams
from molwm.evaluation.cell_features import site_profile

DRUGS = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
         "CC(=O)Nc1ccc(O)cc1", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12"]
CONTROL = np.array([np.log(20.0), 0, 0, 0, 0, 0])


@pytest.mark.unit
def test_parse_nuisance():
    assert parse_nuisance(None) is None and parse_nuisance("legacy") is None
    assert [parse_nuisance(v) for v in ("none", "LOW", "high", "0.25", 0.7)] == [0.0, 0.4, 1.0, 0.25, 0.7]
    for bad in ("medium", "1.5", -0.1):
        with pytest.raises(ValueError):
            parse_nuisance(bad)


def _sites(state, level, n, size=96):
    """``n`` sites of one state: the same cells (biological seed), a different surface each (nuisance seed)."""
    p = RenderParams(image_size=size, nuisance=level)
    return [render_site(state, np.random.default_rng(0), p, nuisance_rng=np.random.default_rng(100 + i))
            for i in range(n)]


@pytest.mark.unit
def test_surface_moves_pixels_not_cell_features():
    calm, noisy = _sites(CONTROL, 0.0, 4), _sites(CONTROL, 1.0, 4)
    spread = {name: np.std([im.reshape(5, -1).mean(1) for im in sites], axis=0).mean()
              for name, sites in (("none", calm), ("high", noisy))}
    assert spread["high"] > 2.5 * spread["none"]  # the surface moves the channel means (none: only positions)
    key = "Nuclei_AreaShape_Area"
    areas = [site_profile(im)[key] for im in noisy]
    # the same cells under four surfaces (and four placements, cut differently at the border):
    # nucleus size is read within 20%
    assert np.ptp(areas) < 0.2 * np.mean(areas)
    bigger = CONTROL.copy()
    bigger[2] = 0.8  # nuclei 2.2x the area
    big = [site_profile(im)[key] for im in _sites(bigger, 1.0, 2)]
    assert min(big) > 1.5 * max(areas)  # the phenotype is read through the nuisance


@pytest.mark.unit
def test_morphology_renderer_keeps_stain_per_cell():
    # spreading the ER (s_3) or enlarging cells (s_1) leaves the total ER stain of a site unchanged
    p = RenderParams(image_size=64, nuisance=0.0)
    totals = []
    for s1, s3 in ((0.0, 0.0), (0.0, 1.0), (0.8, 0.0)):
        state = CONTROL.copy()
        state[1], state[3] = s1, s3
        im = render_site(state, np.random.default_rng(3), p, nuisance_rng=np.random.default_rng(4))
        totals.append(float(im[1].astype(float).sum()))
    np.testing.assert_allclose(totals, totals[0], rtol=0.12)


@pytest.mark.integration
def test_lab_with_nuisance_keeps_biology_and_layouts(tmp_path):
    from molwm.data.formats import read_load_data, read_profiles

    kw = dict(image_size=32, progress=False, seed=0, replicates=2)
    calm = generate_lab(DRUGS, tmp_path / "none", nuisance="none", **kw)
    noisy = generate_lab(DRUGS, tmp_path / "high", nuisance="high", **kw)
    legacy = generate_lab(DRUGS, tmp_path / "legacy", image_size=32, progress=False, seed=0)
    # the biology is the same lab whatever the surface; the images are not
    for name in ("truth/state.npy", "truth/mechanism.npy"):
        np.testing.assert_array_equal(np.load(calm.out_dir / name), np.load(noisy.out_dir / name))
    assert (calm.out_dir / "assays.csv").read_bytes() == (noisy.out_dir / "assays.csv").read_bytes()
    assert (calm.out_dir / "images/SIMP0001/A02_s1_ER.tiff").read_bytes() != \
        (noisy.out_dir / "images/SIMP0001/A02_s1_ER.tiff").read_bytes()
    manifest = json.loads((noisy.out_dir / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["nuisance"] == 1.0 and manifest["replicates"] == 2
    assert json.loads((legacy.out_dir / "manifest.json").read_text())["nuisance"] == "legacy"
    params = json.loads((noisy.out_dir / "truth/params.json").read_text())["render"]
    assert params["nuisance"] == 1.0 and params["nuisance_params"]["vignetting"] > 0
    # replicates: each (compound, dose) twice, on two plates
    assert noisy.n_plates == 2 and noisy.n_wells == 2 * (len(DRUGS) + 8)
    # the real-layout readers read it unchanged, and see it as synthetic
    index = read_load_data(noisy.out_dir / "load_data.csv", check_files=True)
    assert index.synthetic and len(index) == noisy.n_sites and index.frame["is_control"].sum() == 16
    treated = index.frame[~index.frame["is_control"]]
    assert (treated.groupby("compound_id")["plate"].nunique() == 2).all()
    profiles = read_profiles(noisy.out_dir / "profiles.parquet")
    assert profiles.synthetic and profiles.features.shape[0] == noisy.n_wells
    assert not profiles.all_nan_features


@pytest.mark.cli
def test_cli_nuisance_flag(tmp_path, capsys):
    from molwm.cli import main

    smi = tmp_path / "in.smi"
    smi.write_text("\n".join(DRUGS[:3]) + "\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["sim", "generate", "--source", str(smi), "--molecules", "3", "--out", str(tmp_path / "lab"),
                     "--image-size", "32", "--nuisance", "0.5", "--no-progress"]) == 0
    assert json.loads((tmp_path / "lab/manifest.json").read_text())["nuisance"] == 0.5
    assert main(["sim", "generate", "--source", str(smi), "--out", str(tmp_path / "bad"), "--nuisance", "loud",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nuisance" in err[0]
