"""The graph cache under faults (issue 20, part 4): two prepares at once build one cache; a prepare killed
with SIGKILL at any point leaves nothing read as complete; a shard file truncated or edited by hand is
caught by the manifest's sizes and checksums and rebuilt with a warning; caches written before checksums
were recorded still read."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from molwm.data.cache import CorruptCacheError, GraphCache
from molwm.data.prepare import PrepareConfig, prepare_dataset

N_BIG = 3000


def _config(card, tmp_path, **kw) -> PrepareConfig:
    return PrepareConfig(dataset=str(card), cache_dir=str(tmp_path / "c"), progress=False, n_jobs=1, **kw)


@pytest.fixture
def big_card(tmp_path) -> Path:
    """A local card of ``N_BIG`` distinct small ethers (C_i O C_j): enough for 30 shards of 100."""
    csv = tmp_path / "big.csv"
    rows = [f"{'C' * i}O{'C' * j}" for i in range(1, 61) for j in range(1, 51)][:N_BIG]
    csv.write_text("smiles\n" + "\n".join(rows) + "\n")
    card = tmp_path / "big.yaml"
    card.write_text("name: big\nsource:\n  kind: local\n  files:\n    - path: big.csv\n"
                    f"      sha256: {hashlib.sha256(csv.read_bytes()).hexdigest()}\n"
                    "columns:\n  smiles: smiles\ntask:\n  type: unlabelled\n"
                    "license: CC0-1.0\ncitation: made up for tests\n")
    return card


def _prepare_cmd(card: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "molwm", "data", "prepare", str(card), "--cache-dir", str(cache),
            "--shard-size", "100", "--n-jobs", "1", "--no-track", "--no-progress"]


def _complete(cache: Path) -> list[Path]:
    return sorted(p.parent for p in (cache / "big").glob("*/manifest.json"))


@pytest.mark.integration
def test_two_prepares_at_once_build_one_cache(big_card, tmp_path):
    cache = tmp_path / "c"
    procs = [subprocess.Popen(_prepare_cmd(big_card, cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("cache hit" in o for o in outs) == 1  # the second waited for the first and read its cache
    (folder,) = _complete(cache)
    assert len(GraphCache.open(folder)) == N_BIG and not GraphCache.open(folder).verify()
    assert not list((cache / "big" / ".partial").iterdir())


@pytest.mark.integration
def test_a_prepare_killed_anywhere_leaves_nothing_read_as_complete(big_card, tmp_path):
    """SIGKILL as the staging folder appears, after 3 and after 20 of its 30 shards: never a cache that
    reads as complete but is not; the next prepare builds it whole."""
    cache = tmp_path / "c"
    for shards in (0, 3, 20):
        proc = subprocess.Popen(_prepare_cmd(big_card, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            staged = list((cache / "big" / ".partial").glob("*/shard_*")) if (cache / "big").exists() else []
            if (cache / "big" / ".partial").exists() and len([s for s in staged if ".tmp" not in s.name]) >= shards:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for folder in _complete(cache):  # a folder under its key is complete, or there is none
            assert len(GraphCache.open(folder)) == N_BIG and not GraphCache.open(folder).verify()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a killed build is not a corrupt cache: no warning
        result = prepare_dataset(_config(big_card, tmp_path, shard_size=100))
    assert result.n_ok == N_BIG and len(result.cache.shard_names) == 30
    assert [p.name for p in (cache / "big" / ".partial").iterdir()] == []  # the killed builds' leftovers went


@pytest.mark.unit
def test_a_truncated_or_edited_shard_is_rebuilt_with_a_warning(local_csv_card, tmp_path):
    first = prepare_dataset(_config(local_csv_card, tmp_path, shard_size=2))
    arrays = first.cache.path / "shard_00000" / "atom_x.npy"
    if not arrays.exists():
        arrays = sorted((first.cache.path / "shard_00000").glob("*.npy"))[0]
    data = arrays.read_bytes()
    arrays.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CorruptCacheError, match=r"shard_00000/.*bytes, the manifest says"):
        GraphCache.open(first.cache.path)
    with pytest.warns(UserWarning, match=r"truncated or edited\); rebuilding it"):
        again = prepare_dataset(_config(local_csv_card, tmp_path, shard_size=2))
    assert not again.cache_hit and again.n_ok == first.n_ok and not again.cache.verify()
    flipped = bytearray(arrays.read_bytes())
    flipped[-1] ^= 0xFF  # edited in place: same size, another checksum
    arrays.write_bytes(bytes(flipped))
    assert GraphCache.open(first.cache.path).verify() == [f"shard_00000/{arrays.name} does not match its "
                                                           f"SHA-256 (edited)"]
    with pytest.warns(UserWarning, match="does not match its SHA-256"):
        third = prepare_dataset(_config(local_csv_card, tmp_path, shard_size=2))
    assert not third.cache_hit and not third.cache.verify() and third.n_ok == first.n_ok


@pytest.mark.unit
def test_a_cache_without_checksums_still_reads(local_csv_card, tmp_path):
    """Caches written before the manifest listed files (the format is unchanged) are hits, with no warning."""
    first = prepare_dataset(_config(local_csv_card, tmp_path))
    manifest_path = first.cache.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for shard in manifest["shards"]:
        del shard["files"]
    manifest_path.write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = prepare_dataset(_config(local_csv_card, tmp_path))
    assert again.cache_hit and not again.cache.has_checksums and again.n_ok == first.n_ok
    assert os.path.samefile(again.cache.path, first.cache.path)
