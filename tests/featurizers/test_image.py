"""Channel files to site arrays: formats, absent channels, crops, normalisation, rejects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featurizers.errors import FeaturizationError
from featurizers.image import (
    CHANNELS,
    ImageError,
    ImageSpec,
    center_crop,
    featurize_sites,
    load_site,
    normalize_site,
    random_crop,
    read_channel,
)

pytestmark = pytest.mark.unit


def _tiff(path, value=0, shape=(16, 16)):
    arr = (np.arange(shape[0] * shape[1]).reshape(shape) * 7 + value).astype(np.uint16)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def site(tmp_path):
    """Five 16x16 uint16 TIFFs, one per channel."""
    paths = []
    for c, ch in enumerate(CHANNELS):
        p = tmp_path / f"A01_s1_{ch}.tiff"
        _tiff(p, value=100 * c)
        paths.append(p)
    return paths


def test_spec_to_dict():
    d = ImageSpec(size=8).to_dict()
    assert d["channels"] == CHANNELS and d["size"] == 8 and d["dtype"] == "float32"


def test_read_16bit_tiff_png_and_npy_exactly(tmp_path):
    arr = _tiff(tmp_path / "a.tif", value=60000 - 16 * 16 * 7)
    assert Image.open(tmp_path / "a.tif").mode == "I;16"
    out = read_channel(tmp_path / "a.tif")
    assert out.dtype == np.float32 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, arr.astype(np.float32))
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_channel(tmp_path / "a.png"), arr)
    Image.fromarray((arr // 256).astype(np.uint8)).save(tmp_path / "b.png")
    assert read_channel(tmp_path / "b.png").max() == arr.max() // 256
    np.save(tmp_path / "c.npy", arr.astype(np.float64))
    np.testing.assert_array_equal(read_channel(tmp_path / "c.npy"), arr)


@pytest.mark.parametrize(
    "make, code, words",
    [
        (lambda p: None, "missing_file", "not found"),
        (lambda p: p.write_bytes(b"not an image at all"), "unreadable", "not a readable image"),
        (lambda p: np.save(p, np.zeros((2, 4, 4), np.float32)), "bad_shape", "expected a 2-D image"),
        (lambda p: np.save(p, np.zeros((4, 4), np.complex64)), "bad_dtype", "complex64"),
        (lambda p: np.save(p, np.array([[object()]]), allow_pickle=True), "bad_dtype", "object arrays"),
        (lambda p: np.save(p, np.array([[1.0, np.nan], [np.inf, 0.0]])), "nan_pixels", "2 of 4 pixels"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path, make, code, words):
    path = tmp_path / ("x.tif" if code == "unreadable" else "x.npy")
    make(path)
    with pytest.raises(ImageError) as info:
        read_channel(path)
    assert info.value.code == code and words in info.value.reason and str(path) in info.value.reason
    assert isinstance(info.value, FeaturizationError)


def test_truncated_tiff_and_rgb_are_refused(tmp_path):
    _tiff(tmp_path / "full.tiff")
    data = (tmp_path / "full.tiff").read_bytes()
    (tmp_path / "cut.tiff").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as info:
        read_channel(tmp_path / "cut.tiff")
    assert info.value.code == "unreadable" and "cut.tiff" in info.value.reason
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageError, match="not a grayscale image"):
        read_channel(tmp_path / "rgb.png")
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="unsupported image format"):
        read_channel(tmp_path / "x.jpg")


def test_load_site_absent_channel_is_flagged_not_data(site):
    paths = list(site)
    paths[2] = None  # RNA not imaged
    img, present = load_site(paths)
    assert img.shape == (5, 16, 16) and img.dtype == np.float32
    assert present.tolist() == [True, True, False, True, True]
    assert not img[2].any()
    np.testing.assert_array_equal(img[3], read_channel(site[3]))


def test_load_site_shape_mismatch_names_both_files(site, tmp_path):
    _tiff(tmp_path / "small.tiff", shape=(8, 16))
    with pytest.raises(ImageError) as info:
        load_site([site[0], site[1], tmp_path / "small.tiff"])
    msg = info.value.reason
    assert info.value.code == "shape_mismatch"
    assert str(site[0]) in msg and "small.tiff" in msg and "(16, 16)" in msg and "(8, 16)" in msg
    with pytest.raises(ImageError, match="no channel files"):
        load_site([None, None])


def test_crops_and_padding_are_shape_exact_and_seeded():
    img = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    np.testing.assert_array_equal(center_crop(img, 2), img[:, 2:4, 2:4])
    padded = center_crop(img, 8)
    assert padded.shape == (2, 8, 8) and not padded[:, 0].any()
    np.testing.assert_array_equal(padded[:, 1:7, 1:7], img)
    a = random_crop(img, 3, np.random.default_rng(0))
    b = random_crop(img, 3, np.random.default_rng(0))
    assert a.shape == (2, 3, 3)
    np.testing.assert_array_equal(a, b)
    tops = {int(random_crop(img, 3, np.random.default_rng(s))[0, 0, 0]) for s in range(20)}
    assert len(tops) > 1  # the window moves


def test_normalize_percentile_is_robust_and_skips_absent():
    rng = np.random.default_rng(0)
    img = rng.uniform(100, 200, (3, 16, 16)).astype(np.float32)
    img[0, 0, 0] = 1e6  # one hot pixel must not squash the rest
    img[2] = 7.0  # constant channel
    present = np.array([True, False, True])
    out = normalize_site(img, present)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert 0.4 < np.median(out[0]) < 0.6
    assert not out[1].any() and not out[2].any()
    np.testing.assert_array_equal(out, normalize_site(img, present))
    z = normalize_site(img, present, "zscore")
    assert abs(float(z[0].mean())) < 1e-4
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_site(img, present, "minmax")


def test_featurize_sites_rejects_and_maps_rows(site, tmp_path):
    np.save(tmp_path / "nan.npy", np.full((16, 16), np.nan))
    _tiff(tmp_path / "big.tiff", shape=(20, 20))
    sites = [
        site,
        [site[0], tmp_path / "gone.tiff", None, None, None],
        [site[0], None, tmp_path / "nan.npy", None, None],
        [None, site[1], None, None, None],
        [None] * 5,
        [tmp_path / "big.tiff"] + [None] * 4,
    ]
    batch = featurize_sites(sites, size=12, n_jobs=1, progress=False)
    assert batch.images.shape == (3, 5, 12, 12) and batch.images.dtype == np.float32
    assert batch.index.tolist() == [0, 3, 5]
    assert batch.present[1].tolist() == [False, True, False, False, False]
    assert [(r.index, r.code) for r in batch.rejects] == [
        (1, "missing_file"), (2, "nan_pixels"), (4, "no_channels")]
    assert batch.rejects[0].smiles.endswith("gone.tiff") and "gone.tiff" in batch.rejects[0].reason
    assert len(batch) + len(batch.rejects) == len(sites)


def test_featurize_sites_native_size_and_processes_agree(site, tmp_path):
    _tiff(tmp_path / "big.tiff", shape=(20, 20))
    sites = [site, [tmp_path / "big.tiff"] + [None] * 4, site]
    batch = featurize_sites(sites, size=None, n_jobs=1, progress=False, normalize=None)
    assert batch.images.shape == (2, 5, 16, 16) and batch.index.tolist() == [0, 2]
    assert batch.rejects[0].code == "bad_shape" and batch.rejects[0].index == 1
    np.testing.assert_array_equal(batch.images[0, 4], read_channel(site[4]))
    par = featurize_sites(sites * 2, size=8, n_jobs=2, progress=False, chunk_size=2)
    one = featurize_sites(sites * 2, size=8, n_jobs=1, progress=False)
    np.testing.assert_array_equal(par.images, one.images)
    assert par.index.tolist() == one.index.tolist() == list(range(6))
    empty = featurize_sites([], size=8, progress=False)
    assert empty.images.shape == (0, 5, 8, 8) and empty.present.shape == (0, 5)


def test_channel_stats_keep_between_site_differences():
    from featurizers.image import ChannelStats

    rng = np.random.default_rng(0)
    dim = rng.normal(100, 5, size=(1, 5, 8, 8))
    bright = dim.copy()
    bright[0, 4] += 50  # a brighter Mito channel: a phenotype per-site scaling would erase
    images = np.concatenate([dim, bright])
    present = np.ones((2, 5), bool)
    present[1, 2] = False
    stats = ChannelStats.fit(images, present)
    out = stats.apply(images, present)
    assert out[1, 4].mean() - out[0, 4].mean() > 1.0
    assert np.all(out[1, 2] == 0) and out.dtype == np.float32
