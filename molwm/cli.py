"""The ``molwm`` command. Thin: parse arguments, call a library function, print.

Every subcommand has a Python twin (named in its help) that returns objects.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from molwm import __version__
from molwm.cli_common import one_line, print_chain, quiet_flags
from molwm.cli_screening import add_parser as add_index_parser
from molwm.cli_screening import cmd_query_ray, model_and_index
from molwm.cli_tracking import add_parser as add_tracking_parser
from molwm.config import ConfigError
from molwm.data.cli import add_parsers as add_data_parsers
from molwm.data.cli import cmd_data_prepare
from molwm.errors import MolwmError
from molwm.sim.cli import add_parser as add_sim_parser
from molwm.world.cli import add_parsers as add_world_parsers


def cmd_pretrain(args) -> int:
    from molwm.pretraining import config_kind, load_pretrain_config, pretrain, resumed_pretrain_config
    from molwm.tracking import make_tracker
    from molwm.train.distributed import env_world_size, is_main_process

    if args.resume and (args.config or args.overrides):
        raise ConfigError("--resume continues a run with its checkpoint's config; drop --config and the overrides")
    # resuming, the checkpoint's kind picks the schema and its config is the run's
    kind, config = (resumed_pretrain_config(args.resume) if args.resume else
                    (config_kind(args.config, args.overrides), None))
    if kind != "graph" and env_world_size() > 1:
        raise ConfigError(f"torchrun (WORLD_SIZE={env_world_size()}) runs graph pretraining only; "
                          f"start {kind} pretraining as one process")
    config = config or load_pretrain_config(args.config, args.overrides)
    # under torchrun, rank 0 alone logs and prints (and so alone touches the MLflow store)
    tracker = make_tracker(not args.no_track and is_main_process(), experiment=config.experiment)
    result = pretrain(config, tracker, resume=args.resume, progress=not args.no_progress)
    if not is_main_process():
        return 0
    if kind == "world":
        s = result.build.courses.summary()
        val = result.build.val_rows
        cal = f"{len(val):,} calibration, " if val is not None else ""
        print(f"data: {s['conditions']:,} conditions ({len(result.build.train_rows):,} train, {cal}"
              f"{len(result.build.test_rows):,} held out), {s['drugs']} drugs, {s['observations']:,} observations"
              + (" (synthetic)" if s["synthetic"] else " (real)"))
    elif kind == "multimodal":
        counts = result.build.train.counts()
        print(f"data: {counts['samples']:,} samples ({counts['with_graph']:,} graphs, {counts['with_assays']:,} "
              f"with assays, {counts['with_image']:,} images"
              + (f", {counts['with_profile']:,} well profiles" if "with_profile" in counts else "")
              + f"), {len(result.build.rejects)} rejected")
    print(f"pretrained {result.steps} steps, final loss {result.final_loss:.4f}; checkpoint {result.checkpoint}")
    print_chain(result.run_id, result.model_uri)
    return 0


def cmd_finetune(args) -> int:
    from molwm.config import load_config
    from molwm.tracking import make_tracker
    from molwm.train.finetune import FinetuneConfig, run_finetune

    flags = {}
    if args.from_model:
        flags["from_model"] = args.from_model
    if args.seeds:
        flags["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.register:
        flags["register_name"] = args.register
    config = load_config(FinetuneConfig, args.config, args.overrides, flags=flags)
    tracker = make_tracker(not args.no_track, experiment=config.experiment)
    if args.search and args.resume:
        from molwm.config import ConfigError

        raise ConfigError("--resume continues a fine-tune; it does not apply to --search")
    if args.search:
        from molwm.train.search import search_finetune

        found = search_finetune(config, args.search, tracker, progress=not args.no_progress)
        print(f"best of {args.search} trials (validation rows): {found.best}")
        result = found.refit
    else:
        result = run_finetune(config, tracker, progress=not args.no_progress, resume=args.resume)
    for key, value in result.summary.items():
        if key.startswith("test_") and key.endswith("_mean"):
            name = key[: -len("_mean")]
            print(f"{name}: {value:.4f} ± {result.summary[name + '_std']:.4f} over seeds {config.seeds}")
    print(f"split file: {result.split_file}")
    print_chain(result.run_id, result.model_uri)
    return 0


def cmd_ablate(args) -> int:
    from molwm.config import load_config
    from molwm.experiments.ablate import AblateConfig, run_ablation
    from molwm.experiments.report import markdown
    from molwm.tracking import make_tracker

    config = load_config(AblateConfig, args.config, args.overrides)
    tracker = make_tracker(not args.no_track, experiment=config.experiment)
    result = run_ablation(config, tracker, progress=not args.no_progress)
    print(markdown(result.runs, result.table))
    for f in result.files:
        print(f"report: {f}")
    if result.run_id:
        print(f"run_id: {result.run_id}")
    return 0


def cmd_query(args) -> int:
    if args.engine == "ray":
        return cmd_query_ray(args)
    from molwm.query_files import run_query

    what = [w.strip() for w in args.what.split(",") if w.strip()] if args.what else None
    model, reference = args.model, args.reference
    if args.index:  # the model is loaded once, to check the index was built with it
        model, reference = model_and_index(args.model, args.index)
    result = run_query(model, args.output, smiles=args.smiles, input_path=args.input,
                       smiles_column=args.smiles_column, what=what, reference=reference, k=args.k,
                       plot=args.plot, chunk_size=args.chunk_size,
                       workers=1 if args.workers is None else args.workers, progress=not args.no_progress)
    print(result.summary())
    for path in result.plots:
        print(f"plot: {path}")
    return 0


def _check_servable(uri: str) -> None:
    """Raise a one-line error unless ``uri`` names an MLflow model, before ``mlflow models serve`` is spawned
    (whose own failure is a traceback from another process). Lists the model's files; downloads nothing."""
    from molwm.tracking import StoreError, default_tracking_uri, model_files

    hint = ("serve an MLflow model: the models:/NAME@ALIAS or models:/m-... URI printed as model_uri by "
            "molwm finetune / pretrain")
    path = Path(uri)
    if path.is_file():
        raise ConfigError(f"{uri} is a checkpoint file; {hint}")
    if "://" not in uri and not uri.startswith(("runs:/", "models:/")):
        if not path.exists():
            raise FileNotFoundError(f"no model at {uri}; {hint}")
        if not (path / "MLmodel").is_file():
            raise ConfigError(f"{uri} is not an MLflow model folder (it has no MLmodel file); {hint}")
        return
    store = default_tracking_uri()
    try:  # lists the files (downloads nothing); mlflow's global tracking URI is left alone
        files = model_files(uri, store)
    except StoreError as err:
        raise ConfigError(f"cannot serve {uri}: MLflow store {store} cannot resolve it ({err})") from None
    if "MLmodel" not in files:
        raise ConfigError(f"{uri} in MLflow store {store} is not an MLflow model (it has no MLmodel file); "
                          f"{hint}")


def cmd_serve(args) -> int:
    _check_servable(args.model)  # before importing the serving stack: a bad URI answers at once
    from molwm.serving import serve, serve_command

    def announce() -> None:  # once the model folder has passed its checks
        where = f"http://{args.host}:{args.port}/invocations"
        print(f"serving {args.model} at {where} (limits: {args.max_molecules} molecules per request, "
              f"{args.max_smiles_length} characters per SMILES, {args.max_body_mb:g} MB per body); "
              "Ctrl-C stops it", flush=True)
        command = serve_command(args.host, args.port, args.workers, args.access_log)
        print("runs: " + " ".join(command), flush=True)

    return serve(args.model, args.host, args.port, args.max_molecules, args.max_smiles_length, args.workers,
                 max_body_mb=args.max_body_mb, threads=args.threads, access_log=args.access_log,
                 announce=announce)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors read like every other molwm error: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"molwm: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``molwm`` parser. Building it imports only the CLI modules (``--help`` answers in well under a
    second); each ``cmd_*`` function imports the library code it runs."""
    parser = _Parser(prog="molwm", description="Multimodal world models for drug discovery.")
    parser.add_argument("--version", action="version", version=f"molwm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_parsers(sub)

    p = sub.add_parser("pretrain", help="pretraining: graph, multimodal or world model, by the YAML's kind "
                       "(Python: molwm.pretraining.pretrain)",
                       epilog="Any config key can be set as key=value, e.g. model.encoder.dim=64. A YAML with "
                              "'kind: multimodal' runs the multimodal JEPA (configs/pretrain/multimodal.yaml), "
                              "'kind: world' a world model (configs/world/lab.yaml). Under torchrun "
                              "--nproc_per_node=N, graph pretraining runs data-parallel with N x batch_size "
                              "molecules per step (docs/distributed.md).")
    p.add_argument("--config", default=None, help="YAML, e.g. configs/pretrain/graph_jepa.yaml")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue a run from its checkpoint")
    quiet_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune property predictors (Python: molwm.train.finetune.run_finetune)",
                       epilog="Any FinetuneConfig key can be set as key=value, e.g. mode=linear_probe.")
    p.add_argument("--config", default=None, help="YAML, e.g. configs/finetune/solubility.yaml")
    p.add_argument("--from", dest="from_model", default=None, metavar="MODEL_URI",
                   help="pretrained checkpoint or MLflow model URI")
    p.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
    p.add_argument("--register", default=None, metavar="NAME", help="register the model under NAME")
    p.add_argument("--search", type=int, default=0, metavar="N",
                   help="choose hyper-parameters with N Optuna trials on validation rows, then refit every seed")
    p.add_argument("--resume", action="store_true",
                   help="continue each seed's member from its checkpoint under out_dir/members (same config)")
    quiet_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("ablate", help="pretraining objectives side by side at an equal budget: probes, "
                                      "label-efficiency fine-tunes, baselines (Python: molwm.experiments.ablate)",
                       epilog="Any AblateConfig key can be set as key=value, e.g. pretrain.budget_seconds=600.")
    p.add_argument("--config", required=True, help="YAML, e.g. configs/ablate/graph.yaml")
    quiet_flags(p)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("query", help="embeddings, properties and neighbours for candidates "
                                     "(Python: molwm.api.load_model, molwm.query_files.run_query)")
    p.add_argument("--model", required=True, metavar="URI",
                   help="checkpoint or MLflow model URI (runs:/..., models:/name@alias, models:/name/version)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", metavar="S", help="SMILES given on the command line")
    src.add_argument("--input", metavar="FILE", help=".csv, .tsv, .smi, .sdf (optionally .gz) or .parquet "
                                                     "(--engine ray: also a folder or a 'GLOB' of such files)")
    p.add_argument("--smiles-column", default=None, help="SMILES column of a table (default: guessed)")
    p.add_argument("--output", required=True, metavar="OUT", help=".csv or .parquet; one row per input "
                   "(--engine ray: a folder of Parquet shards and manifest.json; rerun to resume)")
    p.add_argument("--what", default=None, help="comma-separated: embed, predict, neighbours "
                                                "(default: predict for a fine-tuned model, else embed)")
    p.add_argument("--reference", default=None, metavar="NAME",
                   help="dataset name or file for neighbours and the embedding map "
                        "(default: the model's fine-tuning dataset)")
    p.add_argument("-k", type=int, default=5, help="neighbours per candidate (default 5)")
    p.add_argument("--plot", action="store_true",
                   help="also write an embedding map and per-property histograms next to the output")
    p.add_argument("--chunk-size", type=int, default=10_000,
                   help="candidates per chunk (memory is flat); --engine ray: per block and output shard")
    p.add_argument("--workers", type=int, default=None,
                   help="local: featurizer processes running ahead of the encoder (default 1; 0: none); "
                        "ray: workers holding the model (default: the cluster's CPUs / --threads)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: blocks on a Ray cluster (the 'scale' extra; "
                        "Python: molwm.screening.engine_ray.run_query_ray)")
    p.add_argument("--address", default=None, help="ray: join this cluster (auto, HOST:6379 or ray://HOST:10001); "
                                                   "default: a local cluster for this command")
    p.add_argument("--threads", type=int, default=1, help="ray: CPUs (torch threads) per worker (default 1)")
    p.add_argument("--index", default=None, metavar="URI",
                   help="neighbours from this vector index (molwm index build): a folder or runs:/RUN/index")
    quiet_flags(p)
    p.set_defaults(func=cmd_query)

    add_sim_parser(sub)
    add_world_parsers(sub)

    p = sub.add_parser("serve", help="REST: MLflow's scoring server for a molwm model "
                                     "(Python: molwm.serving.serve)")
    p.add_argument("--model", required=True, metavar="URI", help="MLflow model URI, e.g. models:/NAME@champion")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=None, help="server worker processes")
    p.add_argument("--max-molecules", type=int, default=1000, help="molecules per request (default 1000)")
    p.add_argument("--max-smiles-length", type=int, default=1000, help="characters per SMILES (default 1000)")
    p.add_argument("--max-body-mb", type=float, default=4.0,
                   help="request body limit, refused with HTTP 413 before it is read (default 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process (default 1)")
    p.add_argument("--access-log", action="store_true",
                   help="log a line per request (read or redirect the output: a full pipe stalls the server)")
    p.set_defaults(func=cmd_serve)

    add_index_parser(sub)
    add_tracking_parser(sub)
    return parser


def _takes_overrides(args) -> bool:
    return args.func in (cmd_data_prepare, cmd_pretrain, cmd_finetune, cmd_ablate)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``molwm`` console script.

    Bad input and failed runs (:class:`~molwm.errors.MolwmError`, a featurizer's error, a missing or
    unreadable file) end in one line on stderr, ``molwm: error: ...``, and exit code 2.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value config overrides may sit anywhere among the flags
    args.overrides = [tok for tok in extra if "=" in tok and not tok.startswith("-")]
    unknown = [tok for tok in extra if tok not in args.overrides]
    if unknown or (args.overrides and not _takes_overrides(args)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    # MLflow announces each new store in two INFO lines; they would precede a one-line error
    store_log = logging.getLogger("mlflow.store.db.utils")
    level = store_log.level
    store_log.setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except _reported_errors() as err:  # the tuple is built only once an exception reaches here
        print(f"molwm: error: {one_line(str(err)) or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("molwm: interrupted", file=sys.stderr)
        return 130
    finally:
        store_log.setLevel(level)


def _reported_errors() -> tuple[type[BaseException], ...]:
    """The exceptions :func:`main` reports in one line. A featurizer's error (``featurizers`` never imports
    molwm, so it has its own base) is looked up rather than imported: ``import featurizers`` loads torch,
    and no FeaturizationError can have been raised before ``featurizers.errors`` was loaded."""
    errors: tuple[type[BaseException], ...] = (MolwmError, FileNotFoundError, IsADirectoryError,
                                               PermissionError)
    featurizer_errors = sys.modules.get("featurizers.errors")
    return errors + ((featurizer_errors.FeaturizationError,) if featurizer_errors else ())


if __name__ == "__main__":
    sys.exit(main())
