"""Image-level world model (issue 18, part 4): latent vs pixel-space forecaster vs persistence, per nuisance level.

Per level, one lab followed over time (``molwm sim generate --doses 1,10 --times 0,8,16,24,48
--nuisance LEVEL``; made here when missing), then on the *same* image build, split, batches and
steps: the latent forecaster (``objective: jepa``: EMA-target state tokens of the future site)
and the pixel-space forecaster (``objective: raw``: the future site's normalised pixels), both
with the ViT state encoder and predictors of ``configs/world/lab_images.yaml``. Held-out
scaffolds, 1, 2 and 4 steps ahead: the hidden cell state decoded by a ridge probe on each
model's site embeddings (a pixel forecast is encoded first), against persistence (the start
site, same probe), the probe on the future site actually imaged (``observed``: the decoding
ceiling) and the true state at the start (``true persistence``). Then reference-phenotype
planning (:func:`molwm.world.image_eval.image_planning`) against a perfect forecaster's ceiling.

    python benchmarks/image_world.py --levels none,high --molecules 80 --steps 300 --seeds 0

Figures: docs/benchmarks.md and docs/objectives.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molwm.config import from_dict, load_config, to_dict
from molwm.sim.lab import generate_lab, load_smiles_for_lab
from molwm.world.image_eval import image_planning
from molwm.world.image_run import run_image_world
from molwm.world.images import ImageWorldConfig, build_image_world

KS = (1, 2, 4)
NAMES = {"jepa": "latent", "raw": "pixel"}


def make_lab(level: str, args) -> Path:
    path = Path(f"{args.lab_prefix}{level}")
    if not (path / "manifest.json").is_file():
        t = time.time()
        generate_lab(load_smiles_for_lab(args.source, args.molecules, seed=0), path, seed=0, doses=(1.0, 10.0),
                     times=(0.0, 8.0, 16.0, 24.0, 48.0), image_size=args.image_size, nuisance=level, progress=False,
                     n_assays=2)
        print(f"lab {path}: {time.time() - t:.0f} s", flush=True)
    return path


def oracle_top5(lab: Path, build, rows: list[int], slot: int, cands: list[int]) -> float:
    """Share of planning targets a perfect forecaster (noise-free states) ranks top 5 against the target
    well's own noisy state (as ``benchmarks/world.py lab`` computes its ceiling)."""
    from molwm.sim.biology import CellModel

    manifest = json.loads((lab / "manifest.json").read_text())
    test = build.world.test
    mech = np.load(lab / "truth" / "mechanism.npy")
    drugs = test.courses.drug[cands]
    cells = CellModel(mech.shape[1], int(manifest["seed"]))
    t_last, dose = float(test.courses.times[cands[0], slot]), float(test.courses.dose[cands[0]])
    clean = cells.state(mech[drugs], np.full(len(drugs), dose), np.full(len(drugs), t_last))
    hits = 0
    for r in rows:
        d = np.linalg.norm(clean - test.truth[r, slot], axis=1)
        hits += int((d < d[list(cands).index(r)]).sum()) < 5
    return hits / max(1, len(rows))


def pixel_stat_reference(build, ks=KS, max_rows: int = 4000, max_starts: int = 2000, seed: int = 0) -> dict:
    """The observed future site read by 25 per-channel pixel statistics (ridge fitted on the training sites,
    as the models' probes are): what a hand-made reader of the site gets, on the starts the models are scored on."""
    from molwm.evaluation.lab_probes import pixel_statistics
    from molwm.evaluation.ridge_probes import RidgeProbe
    from molwm.world.evaluate import _starts, r2_score

    train, test = build.world.train, build.world.test
    idx = np.argwhere(train.mask.numpy())
    if len(idx) > max_rows:
        idx = idx[np.sort(np.random.default_rng(seed).choice(len(idx), max_rows, replace=False))]
    probe = RidgeProbe.fit(pixel_statistics(train.windows[idx[:, 0], idx[:, 1]].numpy()),
                           train.truth[idx[:, 0], idx[:, 1]])
    out = {}
    for k in ks:
        rows, slots = _starts(test.mask.numpy(), k)
        if not len(rows):
            continue
        if len(rows) > max_starts:  # the same draw as image_steps_ahead
            pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_starts, replace=False))
            rows, slots = rows[pick], slots[pick]
        x = pixel_statistics(test.windows[rows, slots[:, -1]].numpy())
        out[f"truth_r2.k{k}.observed_pixel_stats"] = r2_score(probe.predict(x), test.truth[rows, slots[:, -1]])
    return out


def run_level(level: str, args) -> dict:
    lab = make_lab(level, args)
    base = load_config(ImageWorldConfig, "configs/world/lab_images.yaml",
                       [f"data.lab={lab}", f"max_steps={args.steps}", "log_every=50", "health_every=1000",
                        "checkpoint_every=100000", f"batch_size={args.batch_size}"])
    t = time.time()
    build = build_image_world(base)
    print(f"{level}: {build.world.courses.n} conditions ({len(build.world.train_rows)} train, "
          f"{len(build.world.test_rows)} held out), sites read in {time.time() - t:.0f} s", flush=True)
    out = {"reference": pixel_stat_reference(build)}
    print(f"{level}: observed future site, 25 pixel statistics: " + "  ".join(
        f"{k} {v:.3f}" for k, v in out["reference"].items()), flush=True)
    for seed in args.seeds:
        for objective in ("jepa", "raw"):
            cfg = from_dict(ImageWorldConfig, {**to_dict(base), "objective": objective, "seed": seed,
                                               "out_dir": f"{args.out_dir}/{level}-{objective}-s{seed}"})
            t = time.time()
            result = run_image_world(cfg, progress=False, build=build)
            sec = time.time() - t
            plan = image_planning(result.net, build.world.train, build.world.test, objective, args.candidates,
                                  args.targets, seed)
            if plan["rows"]:
                plan["oracle_top5"] = oracle_top5(lab, build, plan["rows"], plan["slot"], plan["candidate_rows"])
            rec = {**result.report, "seconds": sec, "steps": result.steps, "plan": plan}
            out.setdefault(objective, []).append(rec)
            print(f"{level} {NAMES[objective]} seed {seed}: {result.steps} steps in {sec:.0f} s; " + "  ".join(
                f"{k} {v:.3f}" for k, v in result.report.items() if k.startswith(("truth_r2", "latent", "pixel"))
                and not k.endswith((".observed", ".true_persistence"))), flush=True)
    return out


def _cell(runs: list[dict], key: str) -> str:
    v = np.array([r.get(key, np.nan) for r in runs], float)
    if not np.isfinite(v).any():
        return "-"
    return f"{np.nanmean(v):.3f}" + (f" ± {np.nanstd(v):.3f}" if len(v) > 1 else "")


def table(results: dict) -> str:
    lines = [("| nuisance | k | latent | pixel | persistence (latent enc.) | persistence (pixel enc.) | "
              "observed (latent / pixel enc. / pixel stats) | true persistence |"), "|" + "---|" * 8]
    for level, res in results.items():
        lat, pix, ref = res["jepa"], res["raw"], [res["reference"]]
        for k in KS:
            key = f"truth_r2.k{k}"
            if key not in lat[0]:
                continue
            lines.append(f"| {level} | {k} | {_cell(lat, key)} | {_cell(pix, key)} | {_cell(lat, key + '.persistence')}"
                         f" | {_cell(pix, key + '.persistence')} | {_cell(lat, key + '.observed')} / "
                         f"{_cell(pix, key + '.observed')} / {_cell(ref, key + '.observed_pixel_stats')} | "
                         f"{_cell(lat, key + '.true_persistence')} |")
    lines += ["", ("| nuisance | k | latent NMSE (to target emb.) | persistence | pixel NMSE (to future site) | "
                   "persistence |"), "|" + "---|" * 6]
    for level, res in results.items():
        lat, pix = res["jepa"], res["raw"]
        for k in KS:
            if f"latent_nmse.k{k}" not in lat[0]:
                continue
            lines.append(f"| {level} | {k} | {_cell(lat, f'latent_nmse.k{k}')} | "
                         f"{_cell(lat, f'latent_nmse.k{k}.persistence')} | {_cell(pix, f'pixel_nmse.k{k}')} | "
                         f"{_cell(pix, f'pixel_nmse.k{k}.persistence')} |")
    lines += ["", "| nuisance | forecaster | planning top-5 | median rank | candidates | chance | perfect forecaster |",
              "|" + "---|" * 7]
    for level, res in results.items():
        for objective in ("jepa", "raw"):
            p = [r["plan"] for r in res[objective]]
            lines.append(f"| {level} | {NAMES[objective]} | {np.mean([x['top5'] for x in p]):.2f} | "
                         f"{np.mean([x['median_rank'] for x in p]):.1f} | {p[0]['candidates']} | "
                         f"{p[0]['chance_top5']:.2f} | {np.mean([x.get('oracle_top5', np.nan) for x in p]):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=lambda s: s.split(","), default=["none", "high"])
    ap.add_argument("--molecules", type=int, default=80)
    ap.add_argument("--source", default="chembl_drugs")
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lab-prefix", default="outputs/lab-world-img-")
    ap.add_argument("--out-dir", default="outputs/world/image-bench")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    results = {level: run_level(level, args) for level in args.levels}
    text = table(results)
    print("\n" + text + f"\n\ntotal {time.time() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
