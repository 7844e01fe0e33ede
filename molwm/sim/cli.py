"""``molwm sim generate``: the synthetic lab from the command line.

Thin: parse flags, call :func:`molwm.sim.lab.generate_lab`, print a summary.
Wire it into the main parser with ``add_parser(subparsers)``.
"""

from __future__ import annotations

import argparse


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sim`` command (subcommand ``generate``) to an argparse subparsers object.

    Returns:
        The ``sim`` parser.
    """
    sim = subparsers.add_parser("sim", help="synthetic lab: simulated assays, images, profiles of real molecules")
    ssub = sim.add_subparsers(dest="sim_command", required=True)
    p = ssub.add_parser(
        "generate",
        help="write a synthetic plate experiment (Python: molwm.sim.generate_lab)",
        description="Simulate assays, cell states, Cell Painting-like images and profiles for real molecules "
                    "and write them in the layouts of docs/data_layouts.md, with the ground truth in truth/. "
                    "The model is documented in docs/synthetic_lab.md.",
    )
    p.add_argument("--molecules", type=int, default=200, metavar="N",
                   help="molecules to sample (default 200)")
    p.add_argument("--source", default="chembl_drugs", metavar="NAME_OR_FILE",
                   help="dataset card name (e.g. chembl_drugs, moses) or a .smi/.csv file "
                        "(default chembl_drugs)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (must be empty, or use --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="lab seed (default 0)")
    p.add_argument("--assays", type=int, default=12, help="assays in the panel (default 12)")
    p.add_argument("--doses", type=_floats, default=[10.0], metavar="D1,D2", help="doses in uM (default 10)")
    p.add_argument("--times", type=_floats, default=[24.0], metavar="T1,T2",
                   help="time points in h (default 24)")
    p.add_argument("--sites", type=int, default=1, help="image sites per well (default 1)")
    p.add_argument("--image-size", type=int, default=96, help="site height and width in pixels (default 96)")
    p.add_argument("--format", choices=("tiff", "npy"), default="tiff",
                   help="image file format (default tiff)")
    p.add_argument("--nuisance", default="legacy", metavar="LEVEL",
                   help="surface detail independent of the biology: legacy (default: the renderer of earlier "
                        "versions, phenotype partly in channel intensities), or none, low, high or a level in "
                        "[0, 1] (phenotype only in morphology; docs/synthetic_lab.md, section 4b)")
    p.add_argument("--replicates", type=int, default=1,
                   help="wells per compound, dose and time, each on its own plates (default 1)")
    p.add_argument("--no-images", action="store_true",
                   help="skip images and profiles (assays and truth only)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous synthetic lab in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_sim_generate)
    return sim


def cmd_sim_generate(args) -> int:
    """Run ``molwm sim generate``; returns 0. Bad input raises a :class:`~molwm.errors.MolwmError`
    (``SimError``, ``DatasetError``), which :func:`molwm.cli.main` reports in one line with exit code 2."""
    from molwm.sim.lab import generate_lab, load_smiles_for_lab

    smiles = load_smiles_for_lab(args.source, args.molecules, seed=args.seed)
    result = generate_lab(
        smiles, args.out, seed=args.seed, n_assays=args.assays, doses=args.doses, times=args.times,
        sites=args.sites, image_size=args.image_size, image_format=args.format, images=not args.no_images,
        nuisance=args.nuisance, replicates=args.replicates,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(result.summary())
    print(f"synthetic data (manifest.json says so); ground truth in {result.out_dir / 'truth'}")
    return 0
