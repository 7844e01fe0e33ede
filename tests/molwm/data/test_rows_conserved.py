"""Every line of a card or candidates file is a row (issue 26 items 3, 4): malformed lines become rejects
with their line number, a truncated .csv.gz is one line naming the file, a full disk is one line."""

from __future__ import annotations

import errno
import gzip
import hashlib

import pytest

from molwm.atomic import DiskFullError
from molwm.data.cache import ShardWriter
from molwm.data.candidates import iter_candidates
from molwm.data.csv_rows import conserving_source
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.registry import DatasetError

ROWS = "".join(f"m{i},{'C' * (i % 5 + 1)},1.0,2.0\n" for i in range(59))


def _card(tmp_path, data: bytes, name: str = "t", suffix: str = ".csv"):
    csv = tmp_path / f"{name}{suffix}"
    csv.write_bytes(data)
    card = tmp_path / f"{name}.yaml"
    card.write_text(
        f"name: {name}\nsource:\n  kind: local\n  files:\n    - path: {csv.name}\n"
        f"      sha256: {hashlib.sha256(data).hexdigest()}\n"
        "columns:\n  smiles: smiles\n  id: name\n  targets: [a]\ntask:\n  type: regression\n  metric: rmse\n"
        "license: CC0-1.0\ncitation: made up for tests\n")
    return card


def _prepare(card, tmp_path):
    return prepare_dataset(PrepareConfig(dataset=str(card), cache_dir=str(tmp_path / "c"), progress=False,
                                         n_jobs=1))


@pytest.mark.unit
def test_malformed_lines_are_found_with_their_line_and_reason(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('name,smiles,a\nx,CCO,1\ny,CCC\n\nz,CCCC,1,2\nw,CC,"1.5\nv,C,2\n')
    source, malformed = conserving_source(path)
    assert malformed == {1: "line 3: 2 fields, the header has 3", 2: "line 5: 4 fields, the header has 3",
                         3: "line 6: unterminated quote"}
    path.write_text('name,smiles,a\nx,"C\nCO",1\ny,CC,3\n')  # a quoted line break is one record
    assert conserving_source(path) == (path, {})


@pytest.mark.integration
def test_a_card_row_with_an_unterminated_quote_or_wrong_fields_is_a_reject_row(tmp_path):
    card = _card(tmp_path, ("name,smiles,a,b\n" + ROWS + 'x,CC,1.0\nname,CCCC,1.5,"2.5').encode())
    result = _prepare(card, tmp_path)
    assert (result.n_input, result.n_ok, len(result.rejects)) == (61, 59, 2)
    assert [(r.index, r.code, r.reason) for r in result.rejects] == [
        (59, "malformed_line", "line 61: 3 fields, the header has 4"),
        (60, "malformed_line", "line 62: unterminated quote")]
    assert "61 read, 59 featurized, 2 rejected (malformed_line: 2)" in result.summary()


@pytest.mark.unit
def test_a_truncated_gzip_card_file_is_one_line_naming_it(tmp_path):
    data = gzip.compress(("name,smiles,a,b\n" + ROWS * 50).encode())
    card = _card(tmp_path, data[: len(data) // 2], suffix=".csv.gz")
    with pytest.raises(DatasetError, match=r"could not read .*t\.csv\.gz as csv: Compressed file ended"):
        _prepare(card, tmp_path)


@pytest.mark.unit
def test_candidate_lines_that_cannot_be_split_keep_their_row_and_reason(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('name,smiles\na,CCO\nb,CC,extra\nc,CCC\nd,"CC\n')
    frame = next(iter_candidates(path, chunk_size=10))
    assert frame["row"].tolist() == [0, 1, 2, 3] and frame["id"].tolist() == ["a", "1", "c", "3"]
    assert frame["status"].tolist() == [None, "line 3: 3 fields, the header has 2", None,
                                        "line 5: unterminated quote"]
    assert frame["smiles"].tolist() == ["CCO", None, "CCC", None]


@pytest.mark.integration
def test_a_full_disk_in_prepare_is_one_line_and_leaves_no_staging(tmp_path, monkeypatch):
    card = _card(tmp_path, ("name,smiles,a,b\n" + ROWS).encode())
    write = ShardWriter._write
    monkeypatch.setattr(ShardWriter, "_write", lambda self, arrays: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(DiskFullError, match=r"^No space left on device while writing .*/c/t/[0-9a-f]{16} "
                                            r"\((over )?[0-9.]+ (bytes|KB|MB) needed\)$"):
        _prepare(card, tmp_path)
    assert list((tmp_path / "c" / "t" / ".partial").iterdir()) == []  # the staging folder went
    monkeypatch.setattr(ShardWriter, "_write", write)
    assert _prepare(card, tmp_path).n_ok == 59  # room again: the same cache builds


@pytest.mark.unit
def test_a_profile_table_with_a_malformed_line_is_one_line_naming_it(tmp_path):
    from molwm.data.formats.common import FormatError, read_csv_text

    path = tmp_path / "wells.csv"
    path.write_text('plate,well,f1\nP1,A01,0.5\nP1,A02\nP1,A03,"0.7\n')
    with pytest.raises(FormatError, match=r"wells.csv: 2 line\(s\) cannot be split .*: line 3: 2 fields, "
                                          r"the header has 3, line 4: unterminated quote"):
        read_csv_text(path, "profile table")
