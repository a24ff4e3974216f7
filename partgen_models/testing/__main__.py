"""``python -m partgen_models.testing MODELS_DIR``: write the tiny model set into MODELS_DIR."""

import argparse
import logging

from .tiny_models import write_tiny_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models_dir", help="folder to fill, e.g. ComfyUI/models/partgen")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in write_tiny_models(args.models_dir, seed=args.seed):
        logging.info("wrote %s", path)


if __name__ == "__main__":
    main()
