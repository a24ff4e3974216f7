"""``python -m partgen_models.training.train {segmentation,completion} CONFIG``: train a PartGen network.

    python -m partgen_models.training.train segmentation configs/segmentation.json
    accelerate launch --num_processes 8 -m partgen_models.training.train completion configs/completion.json
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m partgen_models.training.train ...  # CPUs
    accelerate launch --config_file partgen_models/training/configs/accelerate_multinode.yaml \\
        --machine_rank $RANK -m partgen_models.training.train segmentation configs/segmentation.json

A run continues from the newest checkpoint in its ``output_dir`` (``--resume DIR`` picks another).
Each ``output_dir/checkpoint-NNNNNNN`` is a loadable PartGen checkpoint: copy or link it into
ComfyUI's ``models/partgen/`` and choose it in *PartGen Load Segmenter* / *PartGen Load Completer*.
The configuration is described in :mod:`partgen_models.training.config`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..weights import WeightsError
from .config import TASKS, ConfigError, load_config
from .shards import DatasetError

logger = logging.getLogger("partgen_models.training.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m partgen_models.training.train",
                                     description="Train PartGen's segmentation or completion network.")
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("config", help="a JSON training config (see partgen_models/training/configs/)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="checkpoint folder to continue from (default: the newest in output_dir, if any)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop at this step (default: the config's)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from .trainer import PartGenTrainer

        config = load_config(args.config)
        trainer = PartGenTrainer(args.task, config, resume=args.resume)
        trainer.train(args.max_steps)
    except (ConfigError, DatasetError, WeightsError) as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
