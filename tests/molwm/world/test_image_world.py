"""The image-level world model: each slot's site is its own well's, the latent and pixel forecasters train
through the world task on the same batches, and the held-out report scores both against persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molwm.config import ConfigError, from_dict
from molwm.world.images import ImageWorldConfig


def _config(lab, out_dir, objective: str = "jepa", **kw) -> ImageWorldConfig:
    fields = {"objective": objective, "data": {"lab": str(lab), "compound": "morgan"},
              "image": {"dim": 32, "layers": 1, "heads": 2, "patch": 8, "image_size": 32},
              "model": {"dim": 32, "history": 1, "depth": 1, "heads": 2, "ensemble": 2},
              "max_steps": 6, "batch_size": 8, "warmup_steps": 2, "rollout_steps": 2, "log_every": 2,
              "health_every": 3, "checkpoint_every": 3, "out_dir": str(out_dir), **kw}
    return from_dict(ImageWorldConfig, fields)


@pytest.mark.integration  # reads the shared time-course lab's tables
def test_each_slot_is_read_from_its_own_well(tiny_world_lab):
    from molwm.world.data import lab_courses_and_wells, load_lab_courses

    courses, wells = lab_courses_and_wells(tiny_world_lab.path)
    plain = load_lab_courses(tiny_world_lab.path)
    np.testing.assert_array_equal(courses.obs, plain.obs)  # the wells are extra; the courses unchanged
    table = pd.read_csv(tiny_world_lab.path / "well.csv")
    state = np.load(tiny_world_lab.path / "truth" / "state.npy")
    seen = wells >= 0
    np.testing.assert_array_equal(seen, courses.mask)
    i, j = np.nonzero(seen)
    w = wells[i, j]
    np.testing.assert_array_equal(table["Metadata_Time_h"].to_numpy()[w], courses.times[i, j])
    np.testing.assert_array_equal(table["Metadata_Dose_uM"].to_numpy()[w], courses.dose[i])
    np.testing.assert_array_equal(state[w], courses.truth[i, j])
    assert len(set(w.tolist())) == len(w)  # every well observed once


@pytest.mark.unit
def test_image_world_config_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="image.dim"):
        _config(tmp_path, tmp_path, image={"dim": 16, "heads": 2, "patch": 8, "image_size": 32}).validate()
    with pytest.raises(ConfigError, match="history"):
        _config(tmp_path, tmp_path, model={"dim": 32, "history": 2}).validate()


@pytest.mark.unit
def test_state_encoder_and_pixel_head_shapes_and_which_head_trains():
    from molwm.world.images import ImageWorldNet

    cfg = _config("lab", "out")
    net = ImageWorldNet(cfg.image, 7, 3, 1, cfg.model)
    sites = torch.randn(4, 5, 32, 32)
    z = net.encoder(sites)
    assert z.shape == (4, 2, 32) and net.target(sites).shape == (4, 2, 32)
    assert net.raw_head(z.flatten(1)).shape == sites.shape  # the pixel forecaster outputs a whole site
    assert net.untrained_parameters("jepa") == ("raw_head.",) and net.untrained_parameters("raw") == ()
    assert not any(p.requires_grad for p in net.target.parameters())


@pytest.mark.integration  # three 6-step runs on the shared time-course lab (seconds)
def test_latent_and_pixel_forecasters_train_are_scored_against_persistence_and_resume(tiny_world_lab, tmp_path):
    from molwm.checkpoints import load_checkpoint
    from molwm.world.image_run import run_image_world
    from molwm.world.images import IMAGE_WORLD_KIND, build_image_world

    build = build_image_world(_config(tiny_world_lab.path, tmp_path))
    train = build.world.train
    assert train.windows.shape[2:] == (5, 32, 32) and train.obs is train.windows  # sites are the observations
    fit = train.windows[train.mask]
    assert abs(float(fit.mean())) < 0.1 and abs(float(fit.std()) - 1.0) < 0.1  # scaled on training sites
    results = {}
    for objective, own in (("jepa", "latent_nmse"), ("raw", "pixel_nmse")):
        result = results[objective] = run_image_world(_config(tiny_world_lab.path, tmp_path / objective, objective),
                                                      progress=False, build=build)
        assert result.steps == 6 and np.isfinite(result.final_loss)
        report = result.report
        for k in (1, 2):
            for key in (f"truth_r2.k{k}", f"truth_r2.k{k}.persistence", f"truth_r2.k{k}.observed",
                        f"{own}.k{k}", f"{own}.k{k}.persistence"):
                assert np.isfinite(report[key]), key
            assert report[f"starts.k{k}"] > 0
        assert not any(k.startswith("pixel" if objective == "jepa" else "latent") for k in report)
        state = load_checkpoint(result.checkpoint)
        assert state["kind"] == IMAGE_WORLD_KIND and state["probes"]["truth"]["weights"]
    # stopped at step 3 and resumed (the driver's exact resume): the weights of the uninterrupted run
    part = run_image_world(_config(tiny_world_lab.path, tmp_path / "part"), progress=False, build=build, stop_after=3)
    resumed = run_image_world(None, progress=False, resume=part.checkpoint)
    full, again = results["jepa"].net.state_dict(), resumed.net.state_dict()
    assert resumed.steps == 6 and all(torch.equal(full[k], again[k]) for k in full)
