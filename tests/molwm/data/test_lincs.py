"""LINCS Cell Painting batch 2 (issue 27, parts 1-2): the raw layout's reader, the compact copy shipped in the
repository, and mirror cards (local mirror folder, cache, download), on tiny files in the raw layouts."""

from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molwm.data.formats.common import FormatError
from molwm.data.formats.lincs import (BARCODES, COUNTS, PLATEMAPS, REPURPOSING, read_compact, read_lincs_wells,
                                      write_compact)
from molwm.data.registry import DatasetError, FileRef, get_card, load_card
from molwm.world.lincs import lincs_courses

REPO = Path(__file__).resolve().parents[3]
HEADER = "plate_map_name\tcell_line\ttime_point\twell_position\tbroad_sample\tmg_per_ml\tmmoles_per_liter\t" \
         "solvent\tvolume_ul\tamount_mg"


def _platemap(name: str, line: str, time: str, wells: list[tuple[str, str, str]]) -> str:
    rows = [HEADER] + [f"{name}\t{line}\t{time}\t{w}\t{s}\tNA\t{d}\tDMSO\t10\t0" for w, s, d in wells]
    return "\n".join(rows) + "\n"


@pytest.fixture
def raw(tmp_path) -> dict[str, Path]:
    """Three plates in the raw layout: P1 (A549 6 h) and P2 (A549 24 h) share a plate map's wells; P3 is in
    no plate map. Compound 1 has a structure (plated at 0.967x 10 uM), compound 2 has none."""
    wells = [("A01", "NA", "NA"), ("A02", "NA", "NA"), ("A03", "BRD-K00000001-001-01-1", "9.67079"),
             ("A04", "BRD-K00000002-001-01-1", "1")]
    files = {
        BARCODES: "Assay_Plate_Barcode,Plate_Map_Name\nP1,MAP1_A549_6H\nP2,MAP1_A549_24H\n",
        f"{PLATEMAPS}/platemap/MAP1_A549_6H.txt": _platemap("MAP1_A549_6H", "A549", "6H", wells),
        f"{PLATEMAPS}/platemap/MAP1_A549_24H.txt": _platemap("MAP1_A549_24H", "A549", "24H", wells),
        f"{COUNTS}/P1/P1_cell_count.csv": "Metadata_Plate,Metadata_Well,cell_count\nP1,A01,100\nP1,A02,120\n"
                                           "P1,A03,55\nP1,A04,80\nP1,A05,70\n",
        f"{COUNTS}/P2/P2_cell_count.csv": "Metadata_Plate,Metadata_Well,cell_count\nP2,A01,200\nP2,A02,200\n"
                                           "P2,A03,50\nP2,A04,x\n",
        f"{COUNTS}/P3/P3_cell_count.csv": "Metadata_Plate,Metadata_Well,cell_count\nP3,A01,10\n",
        REPURPOSING: "broad_id\tpert_iname\tmoa\tsmiles\nBRD-K00000001-001-05-9\tone\tkinase inhibitor\tCCO\n",
    }
    out = {}
    for rel, text in files.items():
        path = tmp_path / "mirror" / "real-cells" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out[rel] = path
    return out


@pytest.mark.unit
def test_wells_join_normalise_to_dmso_and_every_unjoined_well_is_a_reject(raw):
    got = read_lincs_wells(raw)
    w = got.wells.set_index(["plate", "well"])
    assert w.loc[("P1", "A03"), "rel_count"] == pytest.approx(55 / 110)  # median of the plate's DMSO: 110
    assert w.loc[("P2", "A03"), "rel_count"] == pytest.approx(50 / 200)
    assert w.loc[("P1", "A03"), "dose_uM"] == 10.0 and w.loc[("P1", "A03"), "dose_plated_uM"] == pytest.approx(9.67079)
    assert w.loc[("P1", "A03"), "smiles"] == "CCO" and w.loc[("P1", "A03"), "moa"] == "kinase inhibitor"
    assert w.loc[("P1", "A01"), "is_control"] and w.loc[("P1", "A01"), "rel_count"] == pytest.approx(100 / 110)
    reasons = {(r.plate, r.well): r.reason for r in got.rejects.itertuples()}
    assert reasons[("P1", "A05")] == "well not in plate map MAP1_A549_6H"
    assert reasons[("P2", "A04")] == "cell_count 'x' is not a number"
    assert reasons[("P3", "A01")] == "plate not in barcode_platemap.csv"
    assert reasons[("P1", "A04")] == "BRD-K00000002: compound has no structure in any source"
    # conserved: every counted well is a joined well or a reject
    assert len(got.wells) + len(got.rejects) == 5 + 4 + 1


@pytest.mark.unit
def test_courses_start_at_one_and_hold_the_median_of_replicates(raw):
    courses = lincs_courses(read_lincs_wells(raw).wells)
    assert courses.contexts == ["A549"] and courses.drugs == ["BRD-K00000001"]
    i = courses.ids.index("BRD-K00000001@10uM@A549")
    assert courses.obs[i, 0, 0] == 1.0 and courses.times[i].tolist()[:3] == [0.0, 6.0, 24.0]
    assert courses.obs[i, 1, 0] == pytest.approx(0.5) and courses.obs[i, 2, 0] == pytest.approx(0.25)
    assert courses.drug[courses.ids.index("DMSO@A549")] == -1


@pytest.mark.unit
def test_a_raw_file_missing_a_column_is_one_line_naming_it(raw):
    raw[BARCODES].write_text("barcode,map\nP1,MAP1_A549_6H\n")
    with pytest.raises(FormatError, match=r"barcode_platemap.csv: no column\(s\) \['Assay_Plate_Barcode'"):
        read_lincs_wells(raw)


@pytest.mark.unit
def test_the_compact_pair_round_trips_byte_for_byte(raw, tmp_path):
    wells = read_lincs_wells(raw).wells
    first = [p.read_bytes() for p in write_compact(wells, tmp_path / "a")]
    second = [p.read_bytes() for p in write_compact(wells, tmp_path / "b")]
    assert first == second  # no timestamps: rebuilt files are byte-identical
    back = read_compact(tmp_path / "a" / "lincs_batch2_wells.csv.gz", tmp_path / "a" / "lincs_batch2_compounds.csv")
    pd.testing.assert_frame_equal(back.reset_index(drop=True), wells.reset_index(drop=True), check_dtype=False,
                                  atol=1e-6)


def _mirror_card(tmp_path, raw, sha=True, upstream=None):
    rel = f"{COUNTS}/P1/P1_cell_count.csv"
    digest = hashlib.sha256(raw[rel].read_bytes()).hexdigest() if sha else "f" * 64
    text = (f"name: tiny_mirror\nsource:\n  kind: mirror\n  root: real-cells\n"
            + (f"  upstream:\n    lincs-cell-painting: {upstream}\n" if upstream else "")
            + f"  files:\n    - path: {rel}\n      sha256: {digest}\nformat: bundle\nreader: x.y\n")
    card = tmp_path / "tiny_mirror.yaml"
    card.write_text(text)
    return load_card(card), rel


@pytest.mark.unit
def test_mirror_files_are_found_in_the_data_dir_then_the_environment_then_the_cache(raw, tmp_path, monkeypatch):
    from molwm.data.mirror import cached_path, locate_mirror_file
    from molwm.data.sources import resolve_files

    card, rel = _mirror_card(tmp_path, raw)
    monkeypatch.delenv("MOLWM_DATA_MIRROR", raising=False)
    assert resolve_files(card, data_dir=tmp_path / "mirror")[0][1] == raw[rel]
    monkeypatch.setenv("MOLWM_DATA_MIRROR", str(tmp_path / "nowhere") + os.pathsep + str(tmp_path / "mirror"))
    assert resolve_files(card)[0][1] == raw[rel]
    monkeypatch.delenv("MOLWM_DATA_MIRROR")
    cached = cached_path(card, card.source.files[0])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(raw[rel].read_bytes())
    assert locate_mirror_file(card, card.source.files[0]) == cached
    bad, _ = _mirror_card(tmp_path, raw, sha=False)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        resolve_files(bad, data_dir=tmp_path / "mirror")


@pytest.mark.unit
def test_a_mirror_file_found_nowhere_offline_is_one_line_naming_where_it_looked(raw, tmp_path, monkeypatch):
    import molwm.data.mirror as mirror

    monkeypatch.delenv("MOLWM_DATA_MIRROR", raising=False)
    card, rel = _mirror_card(tmp_path, raw)
    with pytest.raises(DatasetError, match=r"not found; point MOLWM_DATA_MIRROR \(or --data-dir\)") as err:
        mirror.locate_mirror_file(card, card.source.files[0])
    assert "\n" not in str(err.value)

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mirror.urllib.request, "urlopen", offline)
    card, _ = _mirror_card(tmp_path, raw, upstream="https://example.org/repo/abc")
    assert mirror.upstream_url(card, card.source.files[0]) == \
        "https://example.org/repo/abc/" + rel.split("/", 1)[1]
    with pytest.raises(DatasetError, match="downloading https://example.org/repo/abc/.* failed \\(no network\\)"):
        mirror.locate_mirror_file(card, card.source.files[0])
    with pytest.raises(DatasetError, match="relative path inside the mirror"):
        mirror.locate_mirror_file(card, FileRef(path="../../etc/passwd"))


@pytest.mark.integration
def test_the_compact_copy_loads_from_a_clean_clone():
    from molwm.data.sources import resolve_files
    from molwm.world.lincs import load_lincs

    card = get_card("lincs_cellpainting_batch2_compact")
    assert resolve_files(card)  # checksums pinned and verified
    courses = load_lincs()
    assert courses.summary() == {"conditions": 2946, "observations": 11784, "drugs": 328, "drugs_with_structure": 328,
                                 "contexts": 3, "controls": 3, "max_time_h": 48.0, "features": 1, "synthetic": False}
    assert courses.contexts == ["A549", "MCF7", "U2OS"]
    rejects = pd.read_csv(REPO / "datasets" / "real_cells" / "lincs_batch2_rejects.csv")
    assert len(rejects) == 264 and rejects["reason"].str.contains("no structure").all()
    sizes = [p.stat().st_size for p in (REPO / "datasets" / "real_cells").iterdir()]
    assert max(sizes) < 2 * 2**20 and sum(sizes) < 5 * 2**20  # the budget for files in the repo
    finite = courses.obs[np.isfinite(courses.obs)]
    assert 0 <= finite.min() and finite.max() < 5


@pytest.mark.integration
def test_the_compact_copy_is_rebuilt_byte_for_byte_from_the_raw_files():
    mirror = os.environ.get("MOLWM_DATA_MIRROR", "")
    if not any((Path(m) / "real-cells" / "lincs-cell-painting").is_dir() for m in mirror.split(os.pathsep) if m):
        pytest.skip("the raw LINCS files are not here (set MOLWM_DATA_MIRROR to a folder holding real-cells/)")
    from molwm.data.real_subset import build_compact

    result = build_compact("lincs_cellpainting_batch2", check=True, progress=False)
    assert result.matches, (result.files, result.pinned)
    assert result.summary["wells"] == 51183 and result.rejects == 264


@pytest.mark.unit
def test_a_download_is_kept_only_when_it_matches_the_cards_checksum(raw, tmp_path, monkeypatch):
    import io

    import molwm.data.mirror as mirror

    monkeypatch.delenv("MOLWM_DATA_MIRROR", raising=False)
    card, rel = _mirror_card(tmp_path, raw, upstream="https://example.org/repo/abc")
    ref = card.source.files[0]
    good = raw[rel].read_bytes()
    monkeypatch.setattr(mirror.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"tampered " + good))
    with pytest.raises(DatasetError, match="is not the card's"):
        mirror.locate_mirror_file(card, ref)
    cached = mirror.cached_path(card, ref)
    assert not cached.exists() and not list(cached.parent.glob("*partial*"))  # nothing half-written kept
    monkeypatch.setattr(mirror.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(good))
    assert mirror.locate_mirror_file(card, ref) == cached and cached.read_bytes() == good
