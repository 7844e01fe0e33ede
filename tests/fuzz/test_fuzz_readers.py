"""Hypothesis fuzzing of the file readers (issue 20, part 5): candidate files (CSV, TSV, SMI, SDF, Parquet,
gzipped), dataset cards and the JUMP / profile / multi-task readers. Whatever the bytes, each ends in rows
(a ``status`` per unreadable record) or in one clear molwm error naming the file; nothing readable is lost.
Example counts are small: these run in the unit tier."""

from __future__ import annotations

import gzip
import hashlib
import io
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molwm.data.candidates import CandidateError, iter_candidates
from molwm.data.formats import FormatError, read_load_data, read_multitask_csv, read_profiles
from molwm.data.registry import DatasetError, load_card
from molwm.errors import MolwmError

pytestmark = pytest.mark.unit
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SUFFIXES = [".csv", ".tsv", ".smi", ".sdf", ".parquet", ".csv.gz", ".tsv.gz", ".smi.gz", ".sdf.gz"]
VALID = {
    ".csv": b"smiles,id\nCCO,a\nc1ccccc1O,b\nC1CC(,c\n",
    ".tsv": b"smiles\tid\nCCO\ta\nc1ccccc1O\tb\n",
    ".smi": b"CCO ethanol\nc1ccccc1O phenol\n",
    ".sdf": b"ethanol\n  RDKit          2D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
            b"    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
            b"    1.2990    0.7500    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
            b"    2.5981   -0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
            b"  1  2  1  0\n  2  3  1  0\nM  END\n$$$$\n",
}


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1O"], "id": ["a", "b"]}).to_parquet(buf, index=False)
    return buf.getvalue()


VALID[".parquet"] = _parquet_bytes()


def _base(suffix: str) -> str:
    return suffix.removesuffix(".gz")


def _write(folder: Path, suffix: str, data: bytes, gz_layer: bool) -> Path:
    path = folder / f"input{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") and gz_layer else data)
    return path


def _read_all(path: Path) -> list[pd.DataFrame] | MolwmError:
    try:
        return list(iter_candidates(path, chunk_size=3))
    except (CandidateError, FileNotFoundError) as err:
        assert str(path) in str(err) and "\n" not in str(err).strip(), str(err)
        return err


@FAST
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=400), gz_layer=st.booleans())
def test_candidate_readers_answer_any_bytes_with_rows_or_a_clear_error(suffix, data, gz_layer):
    with tempfile.TemporaryDirectory() as d:
        out = _read_all(_write(Path(d), suffix, data, gz_layer))
    if not isinstance(out, MolwmError):
        for frame in out:
            assert list(frame.columns) == ["row", "id", "smiles", "status"]
            bad = frame["status"].notna()
            assert frame.loc[bad, "status"].map(lambda s: isinstance(s, str) and len(s) > 0).all()


@FAST
@given(suffix=st.sampled_from(SUFFIXES), cut=st.integers(0, 2000), flips=st.lists(st.integers(0, 2000), max_size=4),
       gz_layer=st.booleans())
def test_candidate_readers_answer_truncated_and_edited_files(suffix, cut, flips, gz_layer):
    data = bytearray(VALID[_base(suffix)])
    for i in flips:
        data[i % len(data)] ^= 0x5A
    data = bytes(data[: cut % (len(data) + 1)])
    if suffix.endswith(".gz") and gz_layer:  # truncate the compressed stream instead
        packed = gzip.compress(bytes(VALID[_base(suffix)]))
        data, gz_layer = packed[: cut % (len(packed) + 1)], False
    with tempfile.TemporaryDirectory() as d:
        _read_all(_write(Path(d), suffix, data, gz_layer))


# a .smi line starting with '#' is a comment (documented); no SMILES starts with it
TOKENS = st.text(alphabet="CNOSclnos()=#[]+-@123456789", min_size=1, max_size=30).filter(lambda t: t[0] != "#")


@FAST
@given(smiles=st.lists(TOKENS, min_size=1, max_size=20),
       suffix=st.sampled_from([".csv", ".tsv", ".smi", ".csv.gz", ".smi.gz", ".parquet"]))
def test_every_readable_row_comes_back_in_order(smiles, suffix):
    base = _base(suffix)
    if base == ".parquet":
        buf = io.BytesIO()
        pd.DataFrame({"smiles": smiles}).to_parquet(buf, index=False)
        data = buf.getvalue()
    elif base == ".smi":
        data = "\n".join(smiles).encode() + b"\n"
    else:
        sep = "\t" if base == ".tsv" else ","
        data = ("smiles" + sep + "id\n" + "".join(f"{s}{sep}m{i}\n" for i, s in enumerate(smiles))).encode()
    with tempfile.TemporaryDirectory() as d:
        out = _read_all(_write(Path(d), suffix, data, True))
    assert not isinstance(out, MolwmError), out
    got = pd.concat(out)
    assert got["smiles"].tolist() == smiles and got["row"].tolist() == list(range(len(smiles)))


# ---- dataset cards ------------------------------------------------------------------------------------

CARD = {"name": "fuzz", "source": {"kind": "local", "files": [{"path": "data.csv"}]}, "format": "csv",
        "columns": {"smiles": "smiles", "targets": ["y"]}, "task": {"type": "regression", "metric": "rmse"},
        "license": "CC0-1.0", "citation": "made up"}
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3), max_leaves=8)


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


def _load(folder: Path, text: str | bytes):
    path = folder / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        return load_card(path)
    except MolwmError as err:  # DatasetError, or ConfigError from the YAML reader: both name the file
        assert str(path) in str(err), str(err)
        return err


@FAST
@given(where=st.sampled_from(sorted(_paths(CARD))), value=VALUES, drop=st.booleans())
def test_a_card_with_a_wrong_value_or_a_missing_key_is_refused_naming_the_key(where, value, drop):
    import copy

    card = copy.deepcopy(CARD)
    node = card
    for key in where[:-1]:
        node = node[key]
    if drop:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    with tempfile.TemporaryDirectory() as d:
        out = _load(Path(d), yaml.safe_dump(card))
    if isinstance(out, MolwmError):
        assert any(str(k) in str(out) for k in where) or "fuzz.yaml" in str(out)


@FAST
@given(data=st.binary(max_size=300))
def test_a_card_of_any_bytes_is_read_or_refused(data):
    with tempfile.TemporaryDirectory() as d:
        _load(Path(d), data)


def test_card_edge_cases_are_refused_with_the_reason(tmp_path):
    kind = str(_load(tmp_path, yaml.safe_dump({**CARD, "source": {"kind": "ftp", "files": []}})))
    assert "source.kind" in kind and "'ftp'" in kind and "'local'" in kind
    huge = _load(tmp_path, "name: fuzz\n" + "# padding\n" * 200_000)
    assert isinstance(huge, DatasetError) and "too large" in str(huge)
    escaping = load_card_package_escape(tmp_path)
    assert isinstance(escaping, DatasetError) and "outside" in str(escaping)


def load_card_package_escape(folder: Path):
    """A package card whose file path climbs out of the distribution (``../../..``): refused on load."""
    from molwm.data.sources import resolve_files

    card = {**CARD, "source": {"kind": "package", "distribution": "pyyaml",
                               "files": [{"path": "../../../../../../etc/hostname"}]}}
    out = _load(folder, yaml.safe_dump(card))
    if isinstance(out, DatasetError):
        return out
    try:
        resolve_files(out, verify=False)
    except DatasetError as err:
        return err
    return None


# ---- JUMP load_data, CellProfiler profiles, multi-task tables -----------------------------------------

LOAD_DATA = (b"Metadata_Source,Metadata_Plate,Metadata_Well,Metadata_Site,FileName_OrigDNA,PathName_OrigDNA\n"
             b"s1,P1,A01,1,a.tiff,img\ns1,P1,A01,2,b.tiff,img\n")
WELLS = b"Metadata_Source,Metadata_Plate,Metadata_Well,Metadata_JCP2022\ns1,P1,A01,JCP2022_1\n"
COMPOUNDS = b"Metadata_JCP2022,Metadata_SMILES,Metadata_InChIKey\nJCP2022_1,CCO,LFQSCWFLJHTTHZ-UHFFFAOYSA-N\n"
PROFILES = b"Metadata_Plate,Metadata_Well,Cells_AreaShape_Area,Nuclei_Intensity_Mean\nP1,A01,1.5,2\nP1,A02,3,4\n"
MULTITASK = b"smiles,t1,t2\nCCO,1,0\nc1ccccc1O,,1\n"


def _mutate(data: bytes, cut: int, flips: list[int]) -> bytes:
    out = bytearray(data)
    for i in flips:
        out[i % len(out)] = (out[i % len(out)] + 37) % 256
    return bytes(out[: cut % (len(out) + 1)])


@FAST
@given(which=st.sampled_from(["load_data", "well", "compound"]), cut=st.integers(0, 400),
       flips=st.lists(st.integers(0, 400), max_size=4))
def test_jump_reader_answers_edited_files_with_an_index_or_a_format_error(which, cut, flips):
    files = {"load_data": LOAD_DATA, "well": WELLS, "compound": COMPOUNDS}
    files[which] = _mutate(files[which], cut, flips)
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            (Path(d) / f"{name}.csv").write_bytes(data)
        try:
            read_load_data(Path(d) / "load_data.csv")
        except FormatError as err:
            assert d in str(err), str(err)


@FAST
@given(suffix=st.sampled_from([".csv", ".csv.gz", ".parquet"]), cut=st.integers(0, 400),
       flips=st.lists(st.integers(0, 400), max_size=4), coerce=st.booleans())
def test_profile_and_multitask_readers_answer_edited_files(suffix, cut, flips, coerce):
    with tempfile.TemporaryDirectory() as d:
        if suffix == ".parquet":
            buf = io.BytesIO()
            pd.read_csv(io.BytesIO(PROFILES)).to_parquet(buf, index=False)
            data = _mutate(buf.getvalue(), cut, flips)
        else:
            data = _mutate(PROFILES, cut, flips)
            data = gzip.compress(data) if suffix.endswith(".gz") and cut % 2 else data
        path = Path(d) / f"profiles{suffix}"
        path.write_bytes(data)
        try:
            read_profiles(path, errors="coerce" if coerce else "raise")
        except FormatError as err:
            assert str(path) in str(err), str(err)
        table = Path(d) / f"tasks{'.csv.gz' if suffix == '.csv.gz' else '.csv'}"
        mt = _mutate(MULTITASK, cut, flips)
        table.write_bytes(gzip.compress(mt) if table.suffix == ".gz" and cut % 2 else mt)
        try:
            read_multitask_csv(table)
        except FormatError as err:
            assert str(table) in str(err), str(err)


@FAST
@given(which=st.sampled_from(["profiles", "multitask", "load_data", "candidates"]), cut=st.integers(1, 10_000))
def test_a_truncated_gzip_stream_is_a_clear_error(which, cut):
    """A .csv.gz cut short (a copy interrupted): pandas raises EOFError, which once escaped as a traceback."""
    seed = {"profiles": PROFILES, "multitask": MULTITASK, "load_data": LOAD_DATA, "candidates": VALID[".csv"]}[which]
    packed = gzip.compress(seed * 200)
    read = {"profiles": read_profiles, "multitask": read_multitask_csv, "load_data": read_load_data,
            "candidates": lambda p: list(iter_candidates(p))}[which]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{'load_data' if which == 'load_data' else 'input'}.csv.gz"
        path.write_bytes(packed[: cut % (len(packed) - 1) + 1])
        if which == "load_data":
            (Path(d) / "well.csv").write_bytes(WELLS)
            (Path(d) / "compound.csv").write_bytes(COMPOUNDS)
        with pytest.raises(MolwmError, match=str(path)):
            read(path)


def test_valid_fixtures_read(tmp_path):
    """The seeds the fuzzers mutate are themselves readable (so the tests above start from real files)."""
    for name, data in {"load_data": LOAD_DATA, "well": WELLS, "compound": COMPOUNDS}.items():
        (tmp_path / f"{name}.csv").write_bytes(data)
    assert len(read_load_data(tmp_path / "load_data.csv").frame) == 2
    (tmp_path / "p.csv").write_bytes(PROFILES)
    assert len(read_profiles(tmp_path / "p.csv").meta) == 2
    (tmp_path / "t.csv").write_bytes(MULTITASK)
    assert read_multitask_csv(tmp_path / "t.csv") is not None
    for suffix, data in VALID.items():
        frames = list(iter_candidates(_write(tmp_path, suffix, data, True)))
        assert sum(len(f) for f in frames) >= 1
    card_csv = tmp_path / "data.csv"
    card_csv.write_text("smiles,y\nCCO,1\n")
    assert load_card_text(tmp_path).name == "fuzz"


def load_card_text(folder: Path):
    path = folder / "ok.yaml"
    card = {**CARD, "source": {"kind": "local", "files": [{"path": "data.csv", "sha256": hashlib.sha256(
        (folder / "data.csv").read_bytes()).hexdigest()}]}}
    path.write_text(yaml.safe_dump(card))
    return load_card(path)
