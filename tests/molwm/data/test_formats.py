"""Readers for the docs/data_layouts.md layouts, on tiny hand-written fixtures, good and malformed."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from featurizers.image import CHANNELS, featurize_sites
from molwm.data.formats import FormatError, read_load_data, read_multitask_csv, read_profiles

pytestmark = pytest.mark.unit

COMPOUNDS = [
    ("JCP2022_000001", "BSYNRYMUTXBXSQ-UHFFFAOYSA-N", "CC(=O)Oc1ccccc1C(=O)O"),
    ("JCP2022_000002", "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "CCO"),
    ("JCP2022_033924", "IAZDPXIOMUYVGZ-UHFFFAOYSA-N", "CS(C)=O"),
]
WELLS = [("P1", "A01", "JCP2022_000001", "10", "24"), ("P1", "A02", "JCP2022_000002", "1", "24"),
         ("P1", "B01", "JCP2022_033924", "", "24")]


def _csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def _load_data_rows(root, wells=("A01", "A02", "B01"), sites=(1, 2)):
    rows = []
    for well in wells:
        for s in sites:
            row = ["src", "P1", well, s]
            for ch in CHANNELS:
                name = f"{well}_s{s}_{ch}.tiff"
                img = root / "images" / "P1" / name
                img.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 16), 1000 + s, np.uint16)).save(img)
                row += [name, "images/P1"]
            rows.append(row)
    return rows


LD_HEADER = ["Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_Site"] + [
    c for ch in CHANNELS for c in (f"FileName_Orig{ch}", f"PathName_Orig{ch}")]


@pytest.fixture
def plate(tmp_path):
    """A JUMP-style experiment: 3 wells x 2 sites x 5 channels of 16x16 uint16 TIFFs."""
    root = tmp_path / "exp"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"synthetic": True}))
    _csv(root / "compound.csv", ["Metadata_JCP2022", "Metadata_InChIKey", "Metadata_SMILES"], COMPOUNDS)
    _csv(root / "well.csv", ["Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022",
                             "Metadata_Dose_uM", "Metadata_Time_h"], [("src",) + w for w in WELLS])
    _csv(root / "load_data.csv", LD_HEADER, _load_data_rows(root))
    return root


def test_load_data_links_sites_to_compounds(plate, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path / "exp" / "images")  # paths resolve against the CSV, not the cwd
    index = read_load_data(plate / "load_data.csv", check_files=True)
    f = index.frame
    assert len(index) == 6 and index.synthetic and index.channels_present == CHANNELS
    assert f["site"].tolist() == [1, 2] * 3
    assert f["compound_id"].tolist()[::2] == ["JCP2022_000001", "JCP2022_000002", "JCP2022_033924"]
    assert f["smiles"].iloc[2] == "CCO" and f["inchikey"].iloc[0] == COMPOUNDS[0][1]
    assert f["is_control"].tolist() == [False] * 4 + [True] * 2
    assert f["dose_uM"].iloc[0] == 10.0 and np.isnan(f["dose_uM"].iloc[4]) and f["time_h"].iloc[0] == 24.0
    assert f["source"].iloc[0] == "src"
    assert f["DNA"].iloc[1] == str(plate / "images" / "P1" / "A01_s2_DNA.tiff")
    batch = featurize_sites(index.site_paths(), size=16, n_jobs=1, progress=False, normalize=None)
    assert batch.images.shape == (6, 5, 16, 16) and not batch.rejects
    assert batch.images[1, 0, 0, 0] == 1002.0


def test_absent_channel_and_direct_smiles(tmp_path):
    root = tmp_path
    rows = [["P1", "A01", 1, "a_DNA.tiff", "img", "", ""],
            ["P1", "A02", 1, "b_DNA.tiff", "img", "b_ER.tiff", "img"]]
    _csv(root / "ld.csv", ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "FileName_OrigDNA",
                           "PathName_OrigDNA", "FileName_OrigER", "PathName_OrigER"],
         [r[:7] for r in rows])
    text = (root / "ld.csv").read_text().splitlines()
    text = [text[0] + ",Metadata_SMILES"] + [text[1] + ",", text[2] + ",CCN"]
    (root / "ld.csv").write_text("\n".join(text) + "\n")
    index = read_load_data(root / "ld.csv")  # no well.csv or compound.csv needed
    f = index.frame
    assert f["ER"].tolist()[0] is None and f["ER"].iloc[1].endswith("img/b_ER.tiff")
    assert f["RNA"].isna().all() and index.channels_present == ("DNA", "ER")
    assert f["smiles"].tolist() == [None, "CCN"] and f["compound_id"].tolist() == [None, "CCN"]
    assert f["is_control"].tolist() == [True, False] and not index.synthetic
    assert np.isnan(f["dose_uM"]).all()
    assert index.site_paths()[0][:3] == [str(root / "img" / "a_DNA.tiff"), None, None]


def _expect(match, path, **kw):
    with pytest.raises(FormatError, match=match) as info:
        read_load_data(path, **kw)
    return str(info.value)


def test_load_data_errors_name_file_and_place(plate):
    ld = plate / "load_data.csv"
    frame = pd.read_csv(ld, dtype=str, keep_default_na=False)
    frame.drop(columns=["Metadata_Site"]).to_csv(plate / "nosite.csv", index=False)
    assert "nosite.csv" in _expect("missing required column.*Metadata_Site", plate / "nosite.csv")
    frame.drop(columns=["PathName_OrigRNA"]).to_csv(plate / "nopath.csv", index=False)
    _expect("channel RNA has column FileName_OrigRNA but no PathName_OrigRNA", plate / "nopath.csv")
    pd.concat([frame, frame.iloc[[3]]]).to_csv(plate / "dup.csv", index=False)
    _expect(r"duplicate \(plate, well, site\).*plate P1 well A02 site 2 \(lines 5 and 8\)", plate / "dup.csv")
    bad = frame.copy()
    bad.loc[1, "Metadata_Site"] = "two"
    bad.to_csv(plate / "badsite.csv", index=False)
    _expect("line 3, Metadata_Site 'two'", plate / "badsite.csv")
    (plate / "images" / "P1" / "A02_s1_Mito.tiff").unlink()
    msg = _expect("1 of 30 image files are missing", ld, check_files=True)
    assert "A02_s1_Mito.tiff" in msg
    read_load_data(ld)  # without check_files the index still reads


def test_unknown_wells_and_compound_ids(plate):
    ld = plate / "load_data.csv"
    header = ["Metadata_Plate", "Metadata_Well", "Metadata_JCP2022"]
    _csv(plate / "well.csv", header, [w[:3] for w in WELLS[:2]])
    msg = _expect("unknown compound id.*plate P1 well B01 \\(line 6\\)", ld)
    assert "well.csv" in msg
    _csv(plate / "well.csv", ["Metadata_Plate", "Metadata_Well", "Metadata_JCP2022"],
         [w[:3] for w in WELLS[:2]] + [("P1", "B01", "JCP2022_999999")])
    msg = _expect("unknown compound id.*JCP2022_999999", ld)
    assert "compound.csv" in msg and "well.csv" in msg
    _csv(plate / "well.csv", ["Metadata_Plate", "Metadata_Well"], [w[:2] for w in WELLS])
    _expect("well.csv: missing required column.*Metadata_JCP2022", ld)
    _csv(plate / "well.csv", ["Metadata_Plate", "Metadata_Well", "Metadata_JCP2022", "Metadata_Dose_uM"],
         [w[:4] for w in WELLS[:2]] + [("P1", "B01", "JCP2022_033924", "lots")])
    _expect("well.csv: line 4, column Metadata_Dose_uM: 'lots'", ld)
    (plate / "well.csv").unlink()
    _expect("well.csv not found", ld)


def _profiles_frame():
    return pd.DataFrame({
        "Metadata_Plate": ["P1", "P1", "P1"], "Metadata_Well": ["A01", "A02", "B01"],
        "Cells_AreaShape_Area": [10.0, 12.5, np.inf], "Nuclei_Intensity_Mean": [0.1, 0.2, 0.3],
        "Cytoplasm_Empty": [np.nan] * 3,
    })


def test_profiles_parquet_with_synthetic_flag(tmp_path):
    table = pa.Table.from_pandas(_profiles_frame(), preserve_index=False)
    table = table.replace_schema_metadata({**table.schema.metadata, b"molwm.synthetic": b"true"})
    pq.write_table(table, tmp_path / "profiles.parquet")
    prof = read_profiles(tmp_path / "profiles.parquet")
    assert prof.synthetic and prof.features.dtype == np.float32 and prof.features.shape == (3, 3)
    assert prof.feature_names == ["Cells_AreaShape_Area", "Nuclei_Intensity_Mean", "Cytoplasm_Empty"]
    assert list(prof.meta.columns) == ["Metadata_Plate", "Metadata_Well"]
    assert prof.all_nan_features == ["Cytoplasm_Empty"]
    assert prof.infinite_cells == {"Cells_AreaShape_Area": 1} and np.isnan(prof.features[2, 0])


def test_profiles_csv_gz_text_feature_raise_or_coerce(tmp_path):
    frame = _profiles_frame()
    frame["Cells_Texture"] = ["0.5", "n/a?", "0.7"]
    path = tmp_path / "profiles.csv.gz"
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, index=False)
    with pytest.raises(FormatError, match=r"profiles.csv.gz: feature column 'Cells_Texture' is not numeric "
                                          r"\(1 text cell\(s\), first at line 3: 'n/a\?'\)"):
        read_profiles(path)
    prof = read_profiles(path, errors="coerce")
    assert prof.coerced_cells == {"Cells_Texture": 1} and not prof.synthetic
    assert np.isnan(prof.features[1, -1]) and prof.features[2, -1] == np.float32(0.7)
    (tmp_path / "manifest.json").write_text('{"synthetic": true}')
    assert read_profiles(path, errors="coerce").synthetic
    with pytest.raises(FormatError, match="unknown profiles format"):
        (tmp_path / "p.xlsx").write_text("")
        read_profiles(tmp_path / "p.xlsx")


TOX21_TASKS = ["NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
               "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53"]


def test_tox21_layout_reads_without_options(tmp_path):
    header = TOX21_TASKS + ["mol_id", "smiles"]
    rows = [
        ["0", "0", "1", "", "", "0", "0", "1", "0", "0", "0", "0", "TOX3021", "CCOc1ccc2nc(S(N)(=O)=O)sc2c1"],
        ["0", "0", "", "0", "0", "0", "0", "", "0", "", "0", "0", "TOX3020", "CCN1C(=O)NC(c2ccccc2)C1=O"],
        ["", "", "", "", "", "", "", "", "", "", "", "1", "TOX3024", "CCCCCCCC"],
    ]
    path = tmp_path / "tox21.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(",".join(r) for r in [header] + rows) + "\n")
    table = read_multitask_csv(path)
    assert table.tasks == TOX21_TASKS and table.ids == ["TOX3021", "TOX3020", "TOX3024"]
    assert table.values.shape == (3, 12) and table.values.dtype == np.float32
    assert table.observed[0].tolist() == [True, True, True, False, False] + [True] * 7
    assert table.observed[2].sum() == 1 and table.values[2, 11] == 1.0
    assert table.smiles[1] == "CCN1C(=O)NC(c2ccccc2)C1=O" and not table.bad_cells and not table.duplicate_ids


@pytest.fixture
def assays_csv(tmp_path):
    return _csv(tmp_path / "assays.csv", ["compound_id", "SMILES", "name", "assay_a", "assay_b"], [
        ("c1", "CCO", "ethanol", "0.5", "1"),
        ("c2", "CCN", "ethylamine", "active?", ""),
        ("c1", "CCC", "propane", "0.7", "inf"),
        ("c3", "", "blank", "", "2"),
    ])


def test_multitask_reports_text_inf_and_duplicates(assays_csv):
    table = read_multitask_csv(assays_csv)
    assert table.tasks == ["assay_a", "assay_b"] and table.ignored_columns == ["name"]
    assert table.ids == ["c1", "c2", "c3"] and table.rows.tolist() == [0, 1, 3]
    assert table.smiles == ["CCO", "CCN", None]
    assert table.observed.tolist() == [[True, True], [False, False], [False, True]]
    assert [(b.row, b.column, b.problem) for b in table.bad_cells] == [
        (1, "assay_a", "non_numeric"), (2, "assay_b", "infinite")]
    assert table.duplicate_ids == [("c1", 0, 2)]
    report = table.report()
    assert "line 3 assay_a='active?'" in report and "c1 (lines 2, 4)" in report
    assert len(read_multitask_csv(assays_csv, duplicates="keep")) == 4
    with pytest.raises(FormatError, match=r"assays.csv: 1 duplicate id\(s\) in column 'compound_id': "
                                          r"c1 \(lines 2 and 4\)"):
        read_multitask_csv(assays_csv, duplicates="error")


def test_multitask_named_columns_and_errors(assays_csv, tmp_path):
    table = read_multitask_csv(assays_csv, smiles_column="SMILES", id_column="name", tasks=["assay_b"])
    assert table.tasks == ["assay_b"] and table.ids[0] == "ethanol" and not table.duplicate_ids
    with pytest.raises(FormatError, match="unknown task column.*NR-AR; available task columns: name, assay_"):
        read_multitask_csv(assays_csv, tasks=["assay_a", "NR-AR"])
    with pytest.raises(FormatError, match="no id column 'mol_id'"):
        read_multitask_csv(assays_csv, id_column="mol_id")
    _csv(tmp_path / "nosmiles.csv", ["id", "y"], [("a", 1)])
    with pytest.raises(FormatError, match="nosmiles.csv: no SMILES column found among id, y"):
        read_multitask_csv(tmp_path / "nosmiles.csv")
    with pytest.raises(FormatError, match="not found"):
        read_multitask_csv(tmp_path / "absent.csv")
