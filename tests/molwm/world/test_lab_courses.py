"""A synthetic lab with several time points, read as time courses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from molwm.sim import generate_lab
from molwm.world.data import CourseError, load_lab_courses, value_at

pytestmark = pytest.mark.integration

# the shared time-course lab (``tiny_world_lab`` in tests/conftest.py): these six drugs in this order, then
# "C1CC(", which the lab rejects; 1 and 10 uM; 0, 8 and 24 h; 2 assays
CANONICAL = ["CCO", "Oc1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "OCC(O)CO"]
TIMES, DOSES = (0.0, 8.0, 24.0), (1.0, 10.0)


@pytest.fixture
def lab(tiny_world_lab):
    assert (tiny_world_lab.times, tiny_world_lab.doses) == (TIMES, DOSES) and len(tiny_world_lab.smiles) == 7
    return tiny_world_lab.path


def test_lab_reads_as_courses(lab):
    c = load_lab_courses(lab)
    n_treated = len(CANONICAL) * len(DOSES)
    assert c.obs.shape == (n_treated + 8, len(TIMES), len(c.obs_names))  # 8 DMSO wells per plate -> 8 courses
    assert len(c.obs_names) > 10
    assert all(n.split("_", 1)[0] in ("Cells", "Nuclei", "Cytoplasm") for n in c.obs_names)
    assert c.drugs == [f"SIM-{i:06d}" for i in range(1, 7)]
    assert c.smiles == CANONICAL  # canonical
    assert c.synthetic and c.contexts == ["sim"] and (c.context == 0).all()
    np.testing.assert_array_equal(c.times, np.tile(TIMES, (c.n, 1)))  # every condition at every time
    treated = c.drug >= 0
    assert treated.sum() == n_treated and c.mask[treated].all()
    assert c.ids[:2] == ["SIM-000001@1", "SIM-000001@10"]
    ctrl = ~treated
    assert (c.drug[ctrl] == -1).all() and (c.dose[ctrl] == 0).all()
    assert all(i.startswith("DMSO#") for i in np.asarray(c.ids)[ctrl])
    np.testing.assert_array_equal(np.sort(c.dose[treated]), np.repeat(DOSES, len(CANONICAL)))
    meta = json.loads((lab / "manifest.json").read_text())
    assert c.truth.shape == (c.n, len(TIMES), len(c.truth_names)) and c.truth_names == meta["state_names"]
    assert np.isfinite(c.truth).all()


def test_observations_and_truth_come_from_the_right_wells(lab):
    c = load_lab_courses(lab)
    wells = pd.read_csv(lab / "well.csv")
    prof = pd.read_parquet(lab / "profiles.parquet")
    state = np.load(lab / "truth" / "state.npy")
    i = c.ids.index("SIM-000002@10")
    for j, t in enumerate(TIMES):
        row = np.flatnonzero((wells["Metadata_JCP2022"] == "SIM-000002") & (wells["Metadata_Dose_uM"] == 10.0)
                             & (wells["Metadata_Time_h"] == t))
        assert len(row) == 1
        w = wells.iloc[row[0]]
        same = (prof["Metadata_Plate"] == w["Metadata_Plate"]) & (prof["Metadata_Well"] == w["Metadata_Well"])
        p = prof[same]
        np.testing.assert_allclose(c.obs[i, j], p[c.obs_names].to_numpy(np.float32)[0])
        np.testing.assert_allclose(c.truth[i, j], state[row[0]])
    # controls: a course is one plate position followed over time
    first_ctrl = c.ids.index("DMSO#0")
    dmso = wells[wells["Metadata_JCP2022"] == "DMSO"].sort_values(["Metadata_Time_h", "Metadata_Plate",
                                                                    "Metadata_Well"])
    first_wells = dmso.groupby("Metadata_Time_h").head(1)
    assert first_wells["Metadata_Well"].nunique() == 1
    np.testing.assert_allclose(c.truth[first_ctrl], state[first_wells.index.to_numpy()])
    slot, ok = value_at(c, 10.0)
    assert ok.all() and (slot == 1).all()  # the last observation by 10 h is the 8 h one


def test_a_folder_without_manifest_is_named(tmp_path, lab):
    empty = tmp_path / "not_a_lab"
    empty.mkdir()
    with pytest.raises(CourseError, match=r"not_a_lab: not a synthetic lab \(no manifest.json\)"):
        load_lab_courses(empty)
    no_images = tmp_path / "no_images"
    generate_lab(["CCO", "c1ccccc1O"], no_images, times=TIMES, images=False, n_assays=0, progress=False)
    with pytest.raises(CourseError, match=r"no_images/profiles.parquet: missing.*--no-images"):
        load_lab_courses(no_images)
    with pytest.raises(CourseError, match=r"no column\(s\) \['Cells_Made_Up'\]"):
        load_lab_courses(lab, features=["Cells_Made_Up"])
