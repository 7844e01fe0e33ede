"""molwm's graph + profile models on real profiles, every objective, beside the baselines (issue 27 part 5).

    python benchmarks/real_profiles_molwm.py [--set cell_injury] [--seeds 0,1,2] [--folds 5] [--fold-list all]
        [--objectives jepa,generative,contrastive_profile] [--steps 1500] [--curve-every 300]
        [--chunk 0] [--null-size 1000] [--out outputs/bench/real_profiles_molwm] [--rescore]

Reuses the baselines' units, folds and metrics (``benchmarks/real_profiles.py``: conditions = median profile
per compound, dose and time; 5-fold Bemis-Murcko scaffold folds per seed; cosine rank of the true profile
among the held-out conditions: top-1, top-5%, MRR). **The data are small** (112 and 58 compounds): read
differences of a few points as noise. For each (seed, fold, objective), a graph + profile model
(``configs/pretrain/profiles_cell_injury.yaml``: dims 64, one profile token, ``--steps`` steps of 32 wells,
one thread) is pretrained on the wells of the training compounds (DMSO wells included), and judged on the
held-out compounds only:

* ``retrieval`` from structure, dose and time alone, each objective the way it predicts a profile:
  ``molwm_jepa`` (the predictor's forecast of the profile's target embedding, asked with the condition's
  dose and time from the graph alone; keys: the target encoder's embedding of each held-out condition's
  median profile), ``molwm_generative`` (the same predictor query through the raw-feature head: predicted
  standardised features; keys: the standardised features, as the ridge), ``molwm_contrastive_profile``
  (CLOOME-style: the projected molecule embedding at the dose and time; keys: the projected profile
  embedding). Beside them on the same fold: ``ridge_morgan``, ``nn_tanimoto``, ``chance`` (the baselines'
  functions) and ``ridge_on_embedding`` (a ridge from Morgan + dose + time to the JEPA's target embeddings).
* ``curve``: the same retrieval scores every ``--curve-every`` steps against the run's cumulative training
  wall time (training resumed exactly from its checkpoint between points; evaluation time left out): the
  seed's question at equal compute, JEPA vs generative vs contrastive.
* ``classes``: the compound's class (injury type / MoA, classes with at least the baselines' count) from
  structure, out-of-fold over the same 5 folds, macro-F1 per seed: a logistic regression (C = 0.1, balanced,
  as the baselines' ``logistic_profile``) on the molecule embedding each run gives (``*_graph``: the graph
  encoder a user embeds with; ``*_forecast``: the predicted profile, averaged over the compound's
  conditions), beside ``rf_morgan`` on the same folds.
* ``map``: copairs-style mAP (molwm.evaluation.map_metrics), the raw standardised features beside each
  objective's profile embedding and the untrained encoder's (the JEPA's target encoder at initialisation):
  phenotypic activity of the held-out compounds' wells fold by fold (each treated well retrieves its
  condition's other wells, ``activity_*``, or its compound's wells at the same time over every dose,
  ``activity_compound_time_*``, against every DMSO well; folds with under 3 scorable groups are left
  out), and consistency pooled over the folds (``consistency_pooled_*``: each compound's median
  embedding over its treated wells, from the fold model that held it out, retrieves the compounds of
  its class).

Resumable: each (seed, fold, objective) writes ``parts/<set>-s<seed>-f<fold>-<objective>.json`` and is
skipped when present, so the grid can run in several pieces. ``results.md``, ``results.json`` and
``curves.png`` summarise every part found (``benchmarks/real_profiles_report.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import real_profiles as rp  # the baselines' units, folds and metrics
from real_profiles_report import summarise  # the summary half
import torch
import torch.nn.functional as F

from featurizers.molecule import featurize_arrays
from molwm.atomic import write_text_atomic
from molwm.baselines import morgan_fingerprints
from molwm.checkpoints import load_checkpoint
from molwm.config import from_dict
from molwm.data.batch import GraphBatch
from molwm.data.mm_profiles import CLIP, plain_smiles
from molwm.data.mm_sources import build_multimodal_data
from molwm.data.multimodal import MultimodalBatch
from molwm.data.profile_cards import load_profile_set
from molwm.data.profile_store import ProfileBatch, dose_code
from molwm.jepa.mm_masking import MultimodalMasks, add_pe
from molwm.jepa.modalities import TokenMask, modality_index
from molwm.pretraining import load_pretrain_config
from molwm.query import MoleculeModel
from molwm.evaluation.map_metrics import consensus, phenotypic_activity, phenotypic_consistency
from molwm.train.pretrain_mm import MultimodalPretrainConfig, build_objective_model, run_multimodal_pretrain

CONFIG = Path(__file__).resolve().parents[1] / "configs/pretrain/profiles_cell_injury.yaml"
OBJECTIVES = ("jepa", "generative", "contrastive_profile")


def _profiles(stats: dict, y: np.ndarray, dose_uM: np.ndarray, time_h: np.ndarray) -> ProfileBatch:
    z = np.clip((y - np.asarray(stats["mean"])) / np.asarray(stats["std"]), -CLIP, CLIP)
    n = len(y)
    return ProfileBatch(torch.tensor(z, dtype=torch.float32), torch.from_numpy(dose_code(dose_uM)),
                        torch.tensor(time_h, dtype=torch.float32), torch.zeros(n, dtype=torch.bool))


def _batches(stats: dict, cond: pd.DataFrame, y: np.ndarray) -> tuple[MultimodalBatch, MultimodalBatch, ProfileBatch]:
    """``(graphs + profiles, profiles alone, the profile part)`` of the conditions, row-aligned."""
    arrays, bad = featurize_arrays([plain_smiles(s) for s in cond["smiles"]])
    assert not bad and len(arrays) == len(cond)
    n = len(cond)
    part = _profiles(stats, y, cond["dose"].to_numpy(float), cond["time_h"].to_numpy(float))
    rows = torch.arange(n)
    keys = MultimodalBatch(size=n, index=rows).put("profile", part, rows)
    both = MultimodalBatch(size=n, index=rows).put("graph", GraphBatch.from_arrays(arrays, np.arange(n)), rows)
    both.put("profile", part, rows)
    return both, keys, part


def _forecast_tokens(model, batch: MultimodalBatch) -> torch.Tensor:
    """The predictor's answer for every profile token from the graph alone (the condition's dose and time
    in the queries): ``[n, C, D]``."""
    n = batch.size
    tokens = model.encoders["profile"].n_tokens
    j = modality_index("profile")
    hidden = TokenMask(keep=torch.zeros(n, tokens, dtype=torch.bool), target=torch.ones(n, tokens, dtype=torch.bool))
    masks = MultimodalMasks(hidden=torch.full((n,), j), dropped=torch.full((n,), -1), parts={"profile": hidden})
    (q,) = model.hidden_queries(batch, masks)
    context = model.context(batch, masks)  # every profile token hidden: the molecule and the action only
    (pred,), _ = model.predictor(context, [(q.modality, q.pos, q.pad)], masks.hidden)
    return pred


@torch.no_grad()
def query_and_keys(model, objective: str, stats: dict, cond: pd.DataFrame, y: np.ndarray):
    """Per condition, the prediction from structure + dose + time and the key it is ranked against."""
    model.eval()
    both, keys, part = _batches(stats, cond, y)
    add_pe(both, model.config, torch.Generator().manual_seed(0))
    if objective == "contrastive_profile":
        q, k = model.retrieval_pair(both, keys)
        return q.numpy(), k.numpy()
    pred = _forecast_tokens(model, both)  # [n, C, D]
    if objective == "generative":
        f = part.values.shape[1]
        return model.profile_head(pred).reshape(len(cond), -1)[:, :f].numpy(), part.values.numpy()
    target, _ = model.modality_embedding(keys, "profile")
    return F.layer_norm(pred.mean(1), (model.config.dim,)).numpy(), target.numpy()


@torch.no_grad()
def profile_embedding(model, objective: str, part: ProfileBatch) -> np.ndarray:
    """Each objective's embedding of whole profiles (what a user would store): ``[n, D]``."""
    model.eval()
    n = len(part.values)
    batch = MultimodalBatch(size=n, index=torch.arange(n)).put("profile", part, torch.arange(n))
    if objective == "contrastive_profile":
        return model.partner_embedding(batch).numpy()
    return model.modality_embedding(batch, "profile")[0].numpy()


def map_rows(embed: dict, stats: dict, wells, fold_of: dict, k: int, labels: set, null_size: int) -> list[dict]:
    """Activity and consistency mAP of the held-out compounds' wells, raw features beside each embedding."""
    w = wells.wells
    ctl = w["is_control"].to_numpy(bool)
    held = w["compound_id"].map(fold_of).to_numpy() == k
    rows = np.flatnonzero(ctl | held)
    part = _profiles(stats, wells.features[rows], w["dose_uM"].to_numpy(float)[rows], w["time_h"].to_numpy(float)[rows])
    group = (w["compound_id"] + "|" + [f"{d:.3g}" for d in w["dose_uM"]] + "|" + w["time_h"].astype(str)).to_numpy()[rows]
    treated = ~ctl[rows]
    out = []
    for name, fn in embed.items():
        x = fn(part)
        s = phenotypic_activity(x, group, ctl[rows], null_size=null_size)
        out.append({"task": "map", "method": f"activity_{name}", "dim": int(x.shape[1]), "map": s.map,
                    "retrieved": s.retrieved, "n_groups": s.n_groups})
        ids, prof = consensus(x[treated], w["compound_id"].to_numpy()[rows][treated])
        lab = w.drop_duplicates("compound_id").set_index("compound_id").loc[list(ids), "label"].to_numpy()
        keep = np.isin(lab, list(labels))
        if keep.sum() >= 2 and len(set(lab[keep])) < keep.sum():
            s = phenotypic_consistency(prof[keep], lab[keep], null_size=null_size)
            out.append({"task": "map", "method": f"consistency_{name}", "dim": int(x.shape[1]), "map": s.map,
                        "retrieved": s.retrieved, "n_groups": s.n_groups})
    return out


def train_with_curve(config, build, objective: str, cond, y, te, every: int) -> tuple[object, dict, list[dict]]:
    """Pretrain in segments of ``every`` steps (exact resume between them), scoring retrieval at each."""
    curve, seconds, ckpt, done = [], 0.0, None, 0
    while done < config.max_steps:
        stop = min(done + every, config.max_steps)
        start = time.perf_counter()
        result = run_multimodal_pretrain(config, progress=False, data=build, resume=ckpt,
                                         stop_after=stop if stop < config.max_steps else None)
        seconds += time.perf_counter() - start
        ckpt, done = result.checkpoint, stop
        state = load_checkpoint(ckpt)
        model = build_objective_model(from_dict(MultimodalPretrainConfig, state["config"]), 1)
        model.load_state_dict(state["model"])
        q, k = query_and_keys(model, objective, state["profile_stats"], cond[te].reset_index(drop=True), y[te])
        curve.append({"task": "curve", "method": f"molwm_{objective}", "step": done,
                      "train_seconds": round(seconds, 1), **rp.rank_scores(q, k)})
    return model, state, curve


def molecule_features(checkpoint: Path, model, objective: str, stats: dict, cond, y, comp_ids) -> dict:
    """Per compound: the graph encoder's embedding and the mean predicted profile over its conditions."""
    graph = MoleculeModel.load(checkpoint)
    smiles = cond.drop_duplicates("compound_id").set_index("compound_id").loc[comp_ids, "smiles"]
    g = graph.embed([plain_smiles(s) for s in smiles])
    q, _ = query_and_keys(model, objective, stats, cond, y)
    ids = cond["compound_id"].to_numpy()
    f = np.stack([q[ids == c].mean(0) for c in comp_ids])
    return {"graph": dict(zip(comp_ids, g)), "forecast": dict(zip(comp_ids, f))}


def run_part(args, wells, cond, y, fold_of: dict, seed: int, k: int, objective: str, labels: set) -> dict:
    """One (seed, fold, objective): its rows and the held-out compounds' molecule features."""
    parts = {c: ("test" if f == k else "train") for c, f in fold_of.items()}
    te = cond["compound_id"].map(fold_of).to_numpy() == k
    config = load_pretrain_config(CONFIG, [f"max_steps={args.steps}", f"objective={objective}", f"seed={seed}",
                                           f"checkpoint_every={args.curve_every}", "log_every=50",
                                           f"model.modality_settings.profile.chunk={args.chunk}",
                                           f"out_dir={args.out}/runs/{args.set}-s{seed}-f{k}-{objective}",
                                           f"data.profiles={rp.SETS[args.set][0]}"])
    build = build_multimodal_data(config.data, progress=False, profile_parts=parts)
    model, state, curve = train_with_curve(config, build, objective, cond, y, te, args.curve_every)
    stats = state["profile_stats"]
    base = {"set": args.set, "seed": seed, "fold": k, "steps": args.steps}
    last = curve[-1]
    rows = [{**base, **c} for c in curve]
    rows.append({**base, "task": "retrieval", "method": f"molwm_{objective}", "train_seconds": last["train_seconds"],
                 **{m: last[m] for m in ("top1", "top5pct", "mrr", "n")}})
    embed = {objective: lambda p: profile_embedding(model, objective, p)}
    if objective == "jepa":  # the baselines and the untrained encoder, once per fold
        bits = {c: b for c, b in zip(cond["compound_id"], morgan_fingerprints(list(cond["smiles"])))}
        x = rp.design(np.stack([bits[c] for c in cond["compound_id"]]), cond)
        tr = ~te
        _, t_all = query_and_keys(model, "jepa", stats, cond, y)
        alpha = rp.choose_alpha(x[tr], y[tr], cond[tr].reset_index(drop=True), seed)
        for name, pred, key in (("ridge_morgan", rp.fit_ridge(x[tr], y[tr], alpha)(x[te]), y[te]),
                                ("ridge_on_embedding", rp.fit_ridge(x[tr], t_all[tr], alpha)(x[te]), t_all[te]),
                                ("nn_tanimoto", rp.nn_profiles(cond, y, bits, tr, te), y[te])):
            rows.append({**base, "task": "retrieval", "method": name, **rp.rank_scores(pred, key)})
        rows.append({**base, "task": "retrieval", "method": "chance", **rp.chance_scores(int(te.sum()))})
        torch.manual_seed(seed)
        untrained = build_objective_model(from_dict(MultimodalPretrainConfig, state["config"]), 1)
        embed["untrained"] = lambda p: profile_embedding(untrained, "jepa", p)
        embed = {"raw_features": lambda p: p.values.numpy(), **embed}
    rows += [{**base, **r} for r in map_rows(embed, stats, wells, fold_of, k, labels, args.null_size)]
    comp_ids = sorted({c for c, f in fold_of.items() if f == k})
    feats = molecule_features(state_path(args, seed, k, objective), model, objective, stats,
                              cond[cond["compound_id"].isin(comp_ids)].reset_index(drop=True),
                              y[cond["compound_id"].isin(comp_ids).to_numpy()], comp_ids)
    train_ids = sorted({c for c, f in fold_of.items() if f != k})
    train_feats = molecule_features(state_path(args, seed, k, objective), model, objective, stats,
                                    cond[cond["compound_id"].isin(train_ids)].reset_index(drop=True),
                                    y[cond["compound_id"].isin(train_ids).to_numpy()], train_ids)
    return {"rows": rows, "features": {kind: {"train": {c: v.tolist() for c, v in train_feats[kind].items()},
                                              "test": {c: v.tolist() for c, v in feats[kind].items()}}
                                       for kind in feats}}


def state_path(args, seed: int, k: int, objective: str) -> Path:
    return Path(args.out) / "runs" / f"{args.set}-s{seed}-f{k}-{objective}" / "last.pt"


def rescore(args, wells, path: Path) -> None:
    """Add to a written part what its run's final checkpoint gives beside the fold's own scores: each
    held-out compound's consensus (median over its treated wells) of every embedding, for consistency
    pooled over the folds, and phenotypic activity of compound-and-time groups (over its doses: the
    LINCS plate has one well per condition). Reads ``runs/.../last.pt``; writes the part back."""
    part = json.loads(path.read_text())
    if "consensus" in part:
        return
    _, seed, k, objective = path.stem.split("-", 3)
    seed, k = int(seed[1:]), int(k[1:])
    state = load_checkpoint(state_path(args, seed, k, objective))
    cfg = from_dict(MultimodalPretrainConfig, state["config"])
    model = build_objective_model(cfg, 1)
    model.load_state_dict(state["model"])
    embed = {objective: lambda b: profile_embedding(model, objective, b)}
    if objective == "jepa":
        torch.manual_seed(seed)
        untrained = build_objective_model(cfg, 1)
        embed = {"raw_features": lambda b: b.values.numpy(), **embed,
                 "untrained": lambda b: profile_embedding(untrained, "jepa", b)}
    w, stats = wells.wells, state["profile_stats"]
    ctl = w["is_control"].to_numpy(bool)
    rows = np.flatnonzero(ctl | (w["compound_id"].map(part["fold_of"]).to_numpy() == k))
    b = _profiles(stats, wells.features[rows], w["dose_uM"].to_numpy(float)[rows], w["time_h"].to_numpy(float)[rows])
    group = (w["compound_id"] + "|" + w["time_h"].astype(str)).to_numpy()[rows]
    treated = ~ctl[rows]
    base = {"set": args.set, "seed": seed, "fold": k, "steps": part["rows"][0].get("steps")}
    extra, cons = [], {}
    for name, fn in embed.items():
        x = fn(b)
        sm = phenotypic_activity(x, group, ctl[rows], null_size=args.null_size)
        if sm.n_groups:
            extra.append({**base, "task": "map", "method": f"activity_compound_time_{name}", "dim": int(x.shape[1]),
                          "map": sm.map, "retrieved": sm.retrieved, "n_groups": sm.n_groups})
        ids, prof = consensus(x[treated], w["compound_id"].to_numpy()[rows][treated])
        cons[name] = {c: v.tolist() for c, v in zip(ids, prof)}
    part["rows"] += extra
    part["consensus"] = cons
    write_text_atomic(path, json.dumps(part, default=float))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", default="cell_injury", choices=sorted(rp.SETS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-list", default="all")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--curve-every", type=int, default=300)
    p.add_argument("--chunk", type=int, default=0, help="features per profile token (0: one token, an MLP)")
    p.add_argument("--null-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-compounds", type=int, default=0, help="a quick run on the first N compounds")
    p.add_argument("--out", default="outputs/bench/real_profiles_molwm")
    p.add_argument("--rescore", action="store_true",
                   help="only add consensus embeddings and compound-time activity to the written parts, then summarise")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    wells = load_profile_set(rp.SETS[args.set][0])
    if args.max_compounds:  # a quick run: the first compounds by id, and every DMSO well
        w = wells.wells
        keep_ids = sorted(set(w.loc[~w["is_control"], "compound_id"]))[:args.max_compounds]
        m = (w["is_control"] | w["compound_id"].isin(keep_ids)).to_numpy()
        wells = replace(wells, wells=w[m].reset_index(drop=True), features=wells.features[m])
    cond, y = rp.conditions(wells.wells, wells.features)
    comp, _, _ = rp.compound_table(wells.wells, wells.features, cond, y)
    counts = comp["label"].value_counts()
    labels = set(counts[counts >= rp.SETS[args.set][2]].index) - {""}
    out = Path(args.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    folds = range(args.folds) if args.fold_list == "all" else [int(f) for f in args.fold_list.split(",")]
    if args.rescore:
        for path in sorted((out / "parts").glob(f"{args.set}-s*-f*-*.json")):
            rescore(args, wells, path)
        summarise(out, args.set, comp, labels, args.folds, args.null_size)
        return 0
    for seed in (int(s) for s in args.seeds.split(",")):
        fold_of = dict(zip(comp["compound_id"], rp.scaffold_folds(list(comp["smiles"]), args.folds, seed)))
        for k in folds:
            for objective in args.objectives.split(","):
                path = out / "parts" / f"{args.set}-s{seed}-f{k}-{objective}.json"
                if path.exists():
                    continue
                t0 = time.time()
                part = run_part(args, wells, cond, y, fold_of, seed, k, objective, labels)
                write_text_atomic(path, json.dumps({**part, "fold_of": {c: int(f) for c, f in fold_of.items()}}, default=float))
                last = [r for r in part["rows"] if r["task"] == "retrieval"][0]
                rescore(args, wells, path)
                print(f"[{args.set}] seed {seed} fold {k} {objective}: MRR {last['mrr']:.3f} "
                      f"top-5% {last['top5pct']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    summarise(out, args.set, comp, labels, args.folds, args.null_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
