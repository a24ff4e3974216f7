"""``python -m partgen_models.evaluation``: evaluate proposal backends on part-structured objects.

    python -m partgen_models.evaluation --procedural --backend oracle perturbed-oracle
    python -m partgen_models.evaluation --eval-set DIR --backend perturbed-oracle --n 10
    python -m partgen_models.evaluation --write-set DIR [--n 22 --set-seed 0]
    python -m partgen_models.evaluation --procedural --backend sam3 --names "seat, leg, back"

``--procedural`` regenerates the shipped evaluation set (``EVAL_SET_SIZE`` objects, seed
``EVAL_SET_SEED``) in memory; ``--eval-set`` reads every ``*.glb`` of a folder (one node per part);
``--write-set`` writes the procedural set there as GLB files. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional, Sequence

from .backends import BACKENDS, make_backend
from .evaluate import EvaluationError, EvaluationOptions, evaluate_backend, folder_samples, markdown_table, procedural_samples
from .procedural import EVAL_SET_SEED, EVAL_SET_SIZE, write_evaluation_set

logger = logging.getLogger("partgen_models.evaluation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m partgen_models.evaluation",
                                     description="PartGen's part-segmentation metrics (mAP50/75, seeded mAP, recall@K) "
                                                 "for proposal backends on part-structured objects.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--eval-set", metavar="DIR", help="folder of part-structured .glb files (one node per part)")
    source.add_argument("--procedural", action="store_true", help="the procedural evaluation set, regenerated in memory")
    source.add_argument("--write-set", metavar="DIR", help="write the procedural evaluation set to DIR as .glb files and exit")
    parser.add_argument("--backend", nargs="+", default=["oracle", "perturbed-oracle"], choices=sorted(BACKENDS),
                        help="backends to evaluate (one table row each)")
    parser.add_argument("--n", type=int, default=None,
                        help=f"number of objects (procedural default {EVAL_SET_SIZE}; folder default: all)")
    parser.add_argument("--set-seed", type=int, default=EVAL_SET_SEED, help="seed of the procedural set")
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic backends (perturbations, sampling)")
    parser.add_argument("--noise", type=float, default=1.0, help="perturbation strength of perturbed-oracle")
    parser.add_argument("--models-dir", default="models/partgen", help="partgen backend: folder with the checkpoints")
    parser.add_argument("--samples", type=int, default=10, help="partgen backend: samples pooled per object")
    parser.add_argument("--steps", type=int, default=28, help="partgen backend: denoising steps")
    parser.add_argument("--names", default="", help="sam3 backend: the part names to find, comma-separated ('seat, leg')")
    parser.add_argument("--size", type=int, default=None, help="view resolution (default: the layout's, 320)")
    parser.add_argument("--no-seeded", action="store_true", help="skip seeded mode (one backend call per part)")
    parser.add_argument("--device", default=None, help="render on this device (cpu, cuda)")
    parser.add_argument("--overwrite", action="store_true", help="with --write-set: replace existing files")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if "sam3" in args.backend and not args.write_set and not args.names.strip():
        parser.error("--backend sam3 segments the parts you name: add --names 'seat, leg, back'")
    try:
        if args.write_set:
            paths = write_evaluation_set(args.write_set, args.n or EVAL_SET_SIZE, args.set_seed, overwrite=args.overwrite)
            print(f"wrote {len(paths)} objects to {args.write_set}")
            return 0
        options = EvaluationOptions(size=args.size, seeded=not args.no_seeded, device=args.device)
        backends = [
            make_backend(name, noise=args.noise, models_dir=args.models_dir, samples=args.samples, steps=args.steps,
                         names=args.names)
            for name in args.backend
        ]
        start = time.perf_counter()
        samples = list(procedural_samples(args.n or EVAL_SET_SIZE, args.set_seed, options) if args.procedural
                       else folder_samples(args.eval_set, args.n, options))
        logger.info("rendered %d objects in %.1f s", len(samples), time.perf_counter() - start)
        reports = []
        for backend in backends:
            start = time.perf_counter()
            reports.append(evaluate_backend(backend, samples, options, seed=args.seed))
            logger.info("%s: %d objects in %.1f s", backend.name, len(reports[-1].objects), time.perf_counter() - start)
    except (EvaluationError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(reports))
    return 0
