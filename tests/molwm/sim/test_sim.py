"""The synthetic lab: determinism, on-disk layout, science sanity, missingness and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from molwm.sim import (CHANNELS, FEATURES, CellModel, SimError, compute_mechanisms, generate_lab,
                       load_smiles_for_lab, measure_site, render_site)
from molwm.sim.cli import add_parser

DRUGS = [
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "Cn1c(=O)c2c(ncn2C)n(C)c1=O",  # caffeine
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",  # ibuprofen
    "CC(=O)Nc1ccc(O)cc1",  # paracetamol
    "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",  # imatinib
    "CCCc1nn(C)c2c1nc([nH]c2=O)-c1cc(ccc1OCC)S(=O)(=O)N1CCN(C)CC1",  # sildenafil
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12",  # diazepam
    "CN(C)C(=N)N=C(N)N",  # metformin
]
INVALID = "C1CC(C"
SMALL = dict(image_size=32, progress=False)


def _lab(tmp_path_factory, name, **kw):
    out = tmp_path_factory.mktemp(name) / "lab"
    return generate_lab(DRUGS + [INVALID], out, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def lab_a(tmp_path_factory):
    return _lab(tmp_path_factory, "a", seed=0)


@pytest.fixture(scope="module")
def lab_a_again(tmp_path_factory):
    return _lab(tmp_path_factory, "a2", seed=0)


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.mark.integration
def test_same_seed_gives_identical_files(lab_a, lab_a_again):
    a, b = lab_a.out_dir, lab_a_again.out_dir
    assert _files(a) == _files(b)
    for rel in _files(a):
        if rel.suffix in (".csv", ".json", ".txt", ".tiff"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        elif rel.suffix == ".npy":
            np.testing.assert_array_equal(np.load(a / rel), np.load(b / rel))
    pd.testing.assert_frame_equal(pd.read_parquet(a / "profiles.parquet"),
                                  pd.read_parquet(b / "profiles.parquet"))


@pytest.mark.integration
def test_other_seed_differs(lab_a, tmp_path_factory):
    other = _lab(tmp_path_factory, "b", seed=1, images=False)
    a, b = lab_a.out_dir, other.out_dir
    assert (a / "assays.csv").read_bytes() != (b / "assays.csv").read_bytes()
    assert not np.allclose(np.load(a / "truth/mechanism.npy"), np.load(b / "truth/mechanism.npy"))


@pytest.mark.integration
def test_layout_matches_data_layouts(lab_a):
    root = lab_a.out_dir
    for name in ("compound.csv", "well.csv", "load_data.csv", "profiles.parquet", "assays.csv",
                 "assay_dose_response.csv", "manifest.json", "README.txt", "truth/mechanism.npy",
                 "truth/state.npy", "truth/assay_truth.csv", "truth/params.json"):
        assert (root / name).is_file(), name
    compounds = pd.read_csv(root / "compound.csv", keep_default_na=False)
    assert list(compounds.columns) == ["Metadata_JCP2022", "Metadata_InChIKey", "Metadata_SMILES"]
    assert compounds["Metadata_JCP2022"].tolist()[:2] == ["SIM-000001", "SIM-000002"]
    dmso = compounds[compounds["Metadata_JCP2022"] == "DMSO"]
    assert len(dmso) == 1
    assert dmso.iloc[0]["Metadata_SMILES"] == "" and dmso.iloc[0]["Metadata_InChIKey"] == ""
    assert compounds["Metadata_InChIKey"].iloc[0] == "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"  # aspirin

    wells = pd.read_csv(root / "well.csv")
    assert list(wells.columns) == ["Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022",
                                   "Metadata_Dose_uM", "Metadata_Time_h"]
    assert (wells["Metadata_Source"] == "molwm-sim").all() and (wells["Metadata_Plate"] == "SIMP0001").all()
    assert (wells["Metadata_JCP2022"] == "DMSO").sum() == 8
    assert set(wells["Metadata_JCP2022"]) <= set(compounds["Metadata_JCP2022"])

    load = pd.read_csv(root / "load_data.csv")
    expected = ["Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    for ch in CHANNELS:
        expected += [f"FileName_Orig{ch}", f"PathName_Orig{ch}"]
    assert list(load.columns) == expected and len(load) == len(wells)
    for ch in CHANNELS:
        path = root / load.loc[0, f"PathName_Orig{ch}"] / load.loc[0, f"FileName_Orig{ch}"]
        img = np.asarray(Image.open(path))
        assert img.dtype == np.uint16 and img.shape == (32, 32)
    assert load.loc[0, "FileName_OrigDNA"] == "A01_s1_DNA.tiff"

    table = pq.read_table(root / "profiles.parquet")
    assert table.schema.metadata[b"molwm.synthetic"] == b"true"
    prof = table.to_pandas()
    assert len(prof) == len(wells) and list(prof.columns[6:]) == list(FEATURES)
    assert 20 <= len(FEATURES) <= 40

    assays = pd.read_csv(root / "assays.csv")
    assert list(assays.columns) == ["compound_id", "smiles"] + [f"SIM_A{j:02d}" for j in range(12)]
    curves = pd.read_csv(root / "assay_dose_response.csv")
    assert list(curves.columns) == ["compound_id", "assay", "dose_uM", "response"]
    assert len(curves) == 8 * assays.iloc[:, 2:].notna().to_numpy().sum()

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["generator"] == "molwm.sim"
    assert manifest["channels"] == list(CHANNELS) and manifest["n_molecules"] == len(DRUGS)
    assert all((root / p).exists() for p in manifest["files"].values())
    assert "SYNTHETIC" in (root / "README.txt").read_text()
    assert np.load(root / "truth/mechanism.npy").shape == (len(DRUGS), 8)
    assert np.load(root / "truth/state.npy").shape == (len(wells), 6)
    assert "effect" in json.loads((root / "truth/params.json").read_text())["cells"]


@pytest.mark.integration
def test_invalid_smiles_reported_not_raised(lab_a):
    assert [(r.index, r.code) for r in lab_a.rejects] == [(len(DRUGS), "parse_error")]
    manifest = json.loads((lab_a.out_dir / "manifest.json").read_text())
    assert manifest["rejects"][0]["index"] == len(DRUGS) and "parentheses" in manifest["rejects"][0]["reason"]
    with pytest.raises(SimError, match="none of the 2 inputs"):
        generate_lab([INVALID, ""], "nowhere", progress=False)


@pytest.mark.unit
def test_mechanism_depends_on_structure_only():
    mols = compute_mechanisms(DRUGS, seed=0)
    m = mols.mechanism
    assert m.shape == (8, 8) and np.all(np.abs(m) < 1)
    assert np.linalg.matrix_rank(m) == 8  # every molecule has its own mechanism
    alone = compute_mechanisms(DRUGS[3:4], seed=0).mechanism
    np.testing.assert_allclose(alone[0], m[3])  # independent of the batch
    salt = compute_mechanisms(["Cl." + DRUGS[7]], seed=0).mechanism
    np.testing.assert_allclose(salt[0], m[7])  # a salt acts through its parent


@pytest.mark.integration
def test_higher_dose_moves_state_further(tmp_path):
    res = generate_lab(DRUGS, tmp_path / "lab", doses=(0.1, 100.0), images=False, progress=False)
    wells = pd.read_csv(res.out_dir / "well.csv")
    state = np.load(res.out_dir / "truth/state.npy")
    control = state[wells["Metadata_JCP2022"].to_numpy() == "DMSO"].mean(axis=0)
    shift = np.abs(state - control).sum(axis=1)
    low = shift[wells["Metadata_Dose_uM"].to_numpy() == 0.1].mean()
    high = shift[wells["Metadata_Dose_uM"].to_numpy() == 100.0].mean()
    assert high > 2 * low
    assert not (res.out_dir / "images").exists() and not (res.out_dir / "profiles.parquet").exists()


@pytest.mark.unit
def test_time_course_is_first_order():
    cells = CellModel()
    mech = compute_mechanisms(DRUGS).mechanism
    times = np.array([0.0, 6.0, 24.0, 72.0])
    ctrl = cells.control(times)
    assert np.all(np.diff(ctrl[:, 0]) > 0)  # controls grow
    shifts = []
    for t, c in zip(times, ctrl):
        s = cells.state(mech, np.full(len(mech), 30.0), np.full(len(mech), t))
        shifts.append(np.abs(s[:, 1:] - c[1:]).sum(axis=1))
    shifts = np.array(shifts)  # [T, N]
    assert np.allclose(shifts[0], 0) and np.all(np.diff(shifts, axis=0) >= -1e-12)


@pytest.mark.unit
def test_affected_images_differ_more_than_controls():
    ctrl = CellModel().control([24.0])[0]
    hit = ctrl + np.array([-0.8, 0.6, 0.5, 0.8, -0.6, 0.8])

    def feats(state, seed):
        f = measure_site(render_site(state, np.random.default_rng(seed)))
        return np.log(np.array([v for v in f.values()]) + 1e-6)

    a, b, c = feats(ctrl, 1), feats(ctrl, 2), feats(hit, 3)
    assert np.linalg.norm(c - a) > 2 * np.linalg.norm(b - a)
    img = render_site(ctrl, np.random.default_rng(1))
    assert img.dtype == np.uint16 and img.shape == (5, 96, 96)


@pytest.mark.integration
def test_missingness_near_configured_rate(tmp_path):
    smiles = load_smiles_for_lab("chembl_drugs", 60, seed=0)
    mcar = generate_lab(smiles, tmp_path / "mcar", images=False, inactive_missing=0.0, progress=False)
    values = pd.read_csv(mcar.out_dir / "assays.csv").iloc[:, 2:].to_numpy()
    assert values.size >= 200
    assert abs(np.isnan(values).mean() - 0.4) < 0.07
    both = generate_lab(smiles, tmp_path / "both", images=False, progress=False)
    truth = pd.read_csv(both.out_dir / "truth/assay_truth.csv")
    expected = (0.4 + 0.6 * 0.5 * (1 - truth["active"])).mean()
    assert abs((1 - truth["measured"]).mean() - expected) < 0.07
    measured = truth[truth["measured"] == 1]
    assert measured["active"].mean() > truth["active"].mean()  # not missing at random


@pytest.mark.integration
def test_load_smiles_for_lab_files_and_sampling(tmp_path):
    smi = tmp_path / "m.smi"
    smi.write_text("# header\n" + "\n".join(f"{s} name{i}" for i, s in enumerate(DRUGS)) + "\n")
    assert load_smiles_for_lab(str(smi), 100) == DRUGS
    picked = load_smiles_for_lab(str(smi), 3, seed=5)
    assert picked == load_smiles_for_lab(str(smi), 3, seed=5) and len(picked) == 3
    assert picked == [s for s in DRUGS if s in picked]  # source order kept
    csv = tmp_path / "m.csv"
    pd.DataFrame({"name": range(8), "SMILES": DRUGS}).to_csv(csv, index=False)
    assert load_smiles_for_lab(str(csv), 8) == DRUGS
    pd.DataFrame({"name": range(8)}).to_csv(csv, index=False)
    with pytest.raises(SimError, match="no SMILES column"):
        load_smiles_for_lab(str(csv), 8)


@pytest.mark.integration
def test_npy_format_and_several_times(tmp_path):
    res = generate_lab(DRUGS[:3], tmp_path / "lab", times=(6.0, 48.0), image_format="npy", image_size=24,
                       sites=2, n_assays=2, progress=False)
    wells = pd.read_csv(res.out_dir / "well.csv")
    assert res.n_plates == 2 and sorted(wells["Metadata_Time_h"].unique()) == [6.0, 48.0]
    load = pd.read_csv(res.out_dir / "load_data.csv")
    assert len(load) == 2 * len(wells) and sorted(load["Metadata_Site"].unique()) == [1, 2]
    arr = np.load(res.out_dir / load.loc[0, "PathName_OrigMito"] / load.loc[0, "FileName_OrigMito"])
    assert arr.dtype == np.uint16 and arr.shape == (24, 24)


@pytest.mark.cli
def test_cli_generate(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="molwm")
    add_parser(parser.add_subparsers(dest="command", required=True))
    smi = tmp_path / "m.smi"
    smi.write_text("\n".join(DRUGS[:4] + [INVALID]) + "\n")
    base = ["sim", "generate", "--source", str(smi), "--molecules", "5", "--image-size", "24",
            "--doses", "1,10", "--assays", "3", "--no-progress"]
    argv = base + ["--out", str(tmp_path / "lab")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "4 molecules" in out and "1 invalid SMILES" in out
    assert len(pd.read_csv(tmp_path / "lab/well.csv")) == 8 + 4 * 2
    args = parser.parse_args(argv)
    with pytest.raises(SimError, match="not empty"):  # molwm.cli.main reports it in one line, exit code 2
        args.func(args)
    args = parser.parse_args(argv + ["--overwrite"])
    assert args.func(args) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other/keep.txt").write_text("mine")
    args = parser.parse_args(base + ["--out", str(tmp_path / "other"), "--overwrite"])
    with pytest.raises(SimError, match="not empty"):
        args.func(args)
    assert (tmp_path / "other/keep.txt").is_file()
