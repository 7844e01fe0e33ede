"""Multimodal JEPA benchmarks: retrieval vs the contrastive baseline, assay prediction, image throughput.

Commands (each prints a table and writes JSON with every per-seed figure):

  # molecule -> image retrieval on held-out scaffolds of a synthetic lab, JEPA vs CLOOME-style contrastive
  python benchmarks/multimodal.py retrieval --lab outputs/lab --seeds 0,1,2 --steps 600
  # MoleculeACE assay prediction from the graph alone: frozen features + ridge, per target, on its own split
  python benchmarks/multimodal.py assays --lab outputs/lab --seeds 0,1,2 --steps 1500 \
      --graph-jepa outputs/pretrain/graph_jepa/last.pt --rf-json /tmp/moleculeace_rf.json
  # image encoder throughput at 5x96x96
  python benchmarks/multimodal.py throughput

Pretraining runs use threads=1 by default (never oversubscribe a small machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molwm.config import apply_overrides, from_dict, read_yaml
from molwm.train.pretrain_mm import MultimodalPretrainConfig, run_multimodal_pretrain

ROOT = Path(__file__).resolve().parents[1]


def _config(base: str, overrides: list[str]) -> MultimodalPretrainConfig:
    return from_dict(MultimodalPretrainConfig, apply_overrides(read_yaml(ROOT / base), overrides))


def _pretrain(objective: str, seed: int, args, moleculeace: bool):
    out = Path(args.work) / f"{objective}-{'mace-' if moleculeace else ''}{seed}"
    cfg = _config(args.config, [f"objective={objective}", f"seed={seed}", f"data.lab={args.lab}",
                                f"data.moleculeace={str(moleculeace).lower()}", f"max_steps={args.steps}",
                                f"out_dir={out}", f"threads={args.threads}", *args.overrides])
    t0 = time.perf_counter()
    res = run_multimodal_pretrain(cfg, progress=not args.quiet)
    return res, time.perf_counter() - t0


def _load(res, objective: str):
    from featurizers.molecule import GRAPH_SPEC
    from molwm.checkpoints import load_checkpoint
    from molwm.jepa.contrastive import ContrastiveMolImage
    from molwm.jepa.multimodal import MultimodalJEPA

    state = load_checkpoint(res.checkpoint)
    cfg = from_dict(MultimodalPretrainConfig, state["config"])
    model = ContrastiveMolImage(GRAPH_SPEC, cfg.model) if objective == "contrastive" else \
        MultimodalJEPA(GRAPH_SPEC, max(1, len(state["assay_names"])), cfg.model)
    model.load_state_dict(state["model"])
    return model.eval()


def cmd_retrieval(args) -> dict:
    from molwm.evaluation.retrieval import molecule_image_pairs, retrieval_accuracy

    results = {}
    for objective in args.objectives.split(","):
        for seed in args.seeds:
            res, secs = _pretrain(objective, seed, args, moleculeace=False)
            model = _load(res, objective)
            held = res.build.heldout.subset(np.flatnonzero(res.build.heldout_part == "test"))
            q, k = molecule_image_pairs(model, held)
            acc = retrieval_accuracy(q, k, pool=args.pool, seed=seed)
            acc.update(seconds=secs, steps=res.steps)
            results.setdefault(objective, []).append(acc)
            print(f"{objective:12s} seed {seed}: top1 {acc['top1']:.3f} top5 {acc['top5']:.3f} "
                  f"(pool {acc['pool']}, n {acc['n']}, {secs:.0f}s)", flush=True)
    for objective, rows in results.items():
        for key in ("top1", "top5"):
            v = [r[key] for r in rows]
            print(f"{objective:12s} {key}: {np.mean(v):.3f} ± {np.std(v):.3f}")
    return results


def _score(probe, xs_test, ys_test, cliffs) -> dict[str, dict[str, float]]:
    out = {}
    for j, (x, y, c) in enumerate(zip(xs_test, ys_test, cliffs)):
        full = np.zeros((len(x), len(xs_test), x.shape[1]))  # target j's features in its slot
        full[:, j] = x
        err = probe.predict(full)[:, j] - y
        out[j] = {"rmse": float(np.sqrt(np.mean(err**2))),
                  "rmse_cliff": float(np.sqrt(np.mean(err[c] ** 2))) if c.any() else float("nan")}
    return out


def _ridge_per_target(shared: np.ndarray, panel, per=None, columns=None) -> dict[str, dict[str, float]]:
    """Per target: ridge (penalty by LOO on its train cells) on frozen features, RMSE on its test cells."""
    from molwm.evaluation.ridge_probes import RidgeProbe
    from molwm.train.pretrain_mm import readout_columns

    res = {}
    ok = np.isfinite(shared).all(1)
    for part in ("train", "test"):
        mask = panel.train_mask() if part == "train" else panel.test_mask()
        vals = np.where(mask, panel.values, np.nan)
        if per is None:
            xs = [shared[np.isfinite(vals[:, j]) & ok] for j in range(len(panel.assays))]
            ys = [vals[np.isfinite(vals[:, j]) & ok, j] for j in range(len(panel.assays))]
        else:
            xs, ys = readout_columns(shared, per, vals, columns)
        res[part] = (xs, ys, [panel.cliff[np.isfinite(vals[:, j]) & ok, j] for j in range(len(panel.assays))])
    probe = RidgeProbe.fit_columns(res["train"][0], res["train"][1])
    scores = _score(probe, *res["test"])
    return {name: scores[j] for j, name in enumerate(panel.assays)}


def _graph_jepa_features(ckpt: str, smiles: list) -> np.ndarray:
    from molwm.query import WorldModel

    return WorldModel.load(ckpt).embed(smiles)


def _summ(per_target: dict) -> dict[str, float]:
    return {k: float(np.nanmean([v[k] for v in per_target.values()])) for k in ("rmse", "rmse_cliff")}


def cmd_assays(args) -> dict:
    from molwm.data.mm_sources import graphs_only
    from molwm.data.panel import load_moleculeace_panel
    from molwm.train.pretrain_mm import graph_features

    panel = load_moleculeace_panel()
    data = graphs_only(panel.smiles)
    results = {"multimodal_jepa": [], "graph_jepa": None, "rf_morgan": None}
    for seed in args.seeds:
        res, secs = _pretrain("jepa", seed, args, moleculeace=True)
        shared, tokens = graph_features(_load(res, "jepa"), data)
        columns = [res.build.train.assay_names.index(a) for a in panel.assays]
        per = _ridge_per_target(shared, panel, tokens, columns)
        results["multimodal_jepa"].append({"per_target": per, **_summ(per), "seconds": secs})
        print(f"multimodal JEPA seed {seed}: mean RMSE {_summ(per)['rmse']:.3f}, "
              f"cliff {_summ(per)['rmse_cliff']:.3f} ({secs:.0f}s)", flush=True)
    if args.graph_jepa:
        per = _ridge_per_target(_graph_jepa_features(args.graph_jepa, panel.smiles), panel)
        results["graph_jepa"] = {"per_target": per, **_summ(per)}
        print(f"graph-only JEPA ({args.graph_jepa}): mean RMSE {_summ(per)['rmse']:.3f}, "
              f"cliff {_summ(per)['rmse_cliff']:.3f}")
    if args.rf_json and Path(args.rf_json).is_file():
        results["rf_morgan"] = json.loads(Path(args.rf_json).read_text())
    mm = results["multimodal_jepa"]
    for key in ("rmse", "rmse_cliff"):
        v = [r[key] for r in mm]
        print(f"multimodal JEPA {key}: {np.mean(v):.3f} ± {np.std(v):.3f} over seeds {args.seeds}")
    return results


def cmd_throughput(args) -> dict:
    from molwm.encoders.image import ImageEncoder, ImageEncoderConfig

    torch.set_num_threads(args.threads)
    enc = ImageEncoder(ImageEncoderConfig())
    x, present = torch.randn(args.batch, 5, 96, 96), torch.ones(args.batch, 5, dtype=torch.bool)
    out = {}
    with torch.inference_mode():
        enc.eval()
        enc.tokens(x, present)
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            enc.tokens(x, present)
        out["inference_images_per_s"] = args.batch * args.repeats / (time.perf_counter() - t0)
    enc.train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        loss = enc.tokens(x, present).x.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["train_images_per_s"] = args.batch * args.repeats / (time.perf_counter() - t0)
    out.update(threads=args.threads, batch=args.batch, params=sum(p.numel() for p in enc.parameters()))
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["retrieval", "assays", "throughput"])
    p.add_argument("--lab", default="outputs/lab")
    p.add_argument("--config", default="configs/pretrain/multimodal.yaml")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pool", type=int, default=100)
    p.add_argument("--objectives", default="jepa,contrastive", help="retrieval: which objectives to run")
    p.add_argument("--graph-jepa", default=None)
    p.add_argument("--rf-json", default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", default="/tmp/molwm-bench-mm")
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_intermixed_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    result = {"retrieval": cmd_retrieval, "assays": cmd_assays, "throughput": cmd_throughput}[args.command](args)
    out = Path(args.out or f"{args.work}/{args.command}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
