"""``molwm query --engine ray`` and ``molwm index build``: parsing and printing only.

Python twins: :func:`molwm.screening.engine_ray.run_query_ray`, :func:`molwm.screening.build.build_index`,
:func:`molwm.screening.index.load_index`.
"""

from __future__ import annotations

import argparse

from molwm.cli_common import quiet_flags


def _what(args) -> list[str] | None:
    return [w.strip() for w in args.what.split(",") if w.strip()] if args.what else None


def cmd_query_ray(args) -> int:
    """``molwm query --engine ray``: shards and a manifest in the ``--output`` folder."""
    from molwm.screening.engine_ray import run_query_ray
    from molwm.screening.shards import ScreeningError
    from molwm.tracking import make_tracker

    if args.smiles:
        raise ScreeningError("--engine ray reads candidate files: give --input FILE, FOLDER or 'GLOB'")
    if args.plot:
        raise ScreeningError("--plot is for the local engine; plot a sample of the shards instead")
    tracker = make_tracker(not args.no_track, experiment="molwm-query")
    result = run_query_ray(args.model, args.input, args.output, what=_what(args), reference=args.reference,
                           index=args.index, k=args.k, smiles_column=args.smiles_column,
                           block_rows=args.chunk_size, workers=args.workers, threads=args.threads,
                           address=args.address, tracker=tracker, progress=not args.no_progress)
    print(result.summary())
    print(f"manifest: {result.output / 'manifest.json'}")
    if tracker.run_id:
        print(f"run_id: {tracker.run_id}")
    return 0


def model_and_index(model: str, index: str):
    """The loaded model and its index for a local query (refused in one line when they do not match)."""
    from molwm.query import MoleculeModel
    from molwm.screening.index import load_index

    wm = MoleculeModel.load(model)
    return wm, load_index(index, wm)


def cmd_index_build(args) -> int:
    """``molwm index build``."""
    from molwm.screening.build import build_index
    from molwm.tracking import make_tracker

    settings = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        settings[key] = int(value) if value.lstrip("-").isdigit() else value
    tracker = make_tracker(not args.no_track, experiment="molwm-index")
    built = build_index(args.model, args.reference, output=args.output, name=args.name, backend=args.backend,
                        settings=settings, tracker=tracker, progress=not args.no_progress)
    print(built.summary())
    print(f"index: {built.folder}")
    if built.uri:
        print(f"index_uri: {built.uri}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``molwm index build``."""
    p = sub.add_parser("index", help="vector indexes of reference sets for neighbour queries "
                                     "(Python: molwm.screening.build.build_index)")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="embed a reference set with a model and index it",
                        epilog="The index is tied to the model's digest: molwm query --index refuses it for "
                               "another model. It is logged to MLflow as the artifact 'index' of a run "
                               "(index_uri: runs:/<run_id>/index).")
    b.add_argument("--model", required=True, metavar="URI", help="any model URI molwm query takes")
    b.add_argument("--reference", required=True, metavar="CARD_OR_FILE",
                   help="dataset name, candidates file, or an output folder of molwm query --engine ray "
                        "--what embed by the same model (its embeddings are read, not recomputed)")
    b.add_argument("--output", default=None, metavar="DIR",
                   help="index folder (default: <molwm cache>/indexes/<name>-<model digest>)")
    b.add_argument("--name", default=None, help="name of the index (default: the reference's)")
    b.add_argument("--backend", default="auto", choices=("auto", "exact", "usearch", "faiss-hnsw"),
                   help="auto: exact search up to 50,000 molecules, FAISS HNSW above (docs/benchmarks.md)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="backend setting, e.g. --set expansion_search=256 (usearch) or --set ef_search=256")
    quiet_flags(b)
    b.set_defaults(func=cmd_index_build)
