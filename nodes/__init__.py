"""ComfyUI nodes of comfyui-partgen: thin wrappers over ``partgen_models``, one module per stage.

Only this package imports ComfyUI. ``node_classes()`` imports the stage modules on demand so that a
broken optional dependency of one stage cannot take the other nodes down; a stage that fails is
reported where the user looks: a startup warning naming the missing package and the command that
installs it, and a *PartGen: nodes that failed to load* node in the node list saying the same.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

STAGE_MODULES = ("multiview", "segmentation", "completion", "reconstruction", "export", "interop", "rendering", "planning",
                 "mmpart")

# Import names whose pip distribution is called differently.
_DISTRIBUTIONS = {
    "skimage": "scikit-image",
    "fast_simplification": "fast-simplification",
    "PIL": "pillow",
    "huggingface_hub": "huggingface_hub",
    "cv2": "opencv-python",
    "yaml": "pyyaml",
}


@dataclass(frozen=True)
class StageLoadFailure:
    """One stage module that could not be imported: which, why, and what to do about it."""

    stage: str
    reason: str
    fix: str

    @property
    def message(self) -> str:
        return f"the {self.stage} nodes could not be loaded: {self.reason}. Fix: {self.fix}"


def describe_import_failure(stage: str, error: BaseException) -> StageLoadFailure:
    """Turn a stage's import error into a reason and a fix a user can act on."""
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    if missing and not missing.startswith((__name__, __name__.rpartition(".")[0] + ".partgen_models")):
        top = missing.split(".")[0]
        distribution = _DISTRIBUTIONS.get(top, top)
        return StageLoadFailure(
            stage,
            f"the Python package '{distribution}' is missing (import of '{missing}' failed)",
            f"install it into ComfyUI's Python environment (`python -m pip install {distribution}`, or "
            "`python -m pip install -e custom_nodes/comfyui-partgen` for all of the pack's dependencies), then "
            "restart ComfyUI",
        )
    return StageLoadFailure(
        stage,
        f"{type(error).__name__}: {error}",
        "read the traceback above this warning in ComfyUI's console; reinstall the pack's dependencies with "
        "`python -m pip install -e custom_nodes/comfyui-partgen` and restart ComfyUI",
    )


def node_classes() -> list[type]:
    classes: list[type] = []
    failures: list[StageLoadFailure] = []
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception as error:  # one stage failing to import must not hide the others
            failure = describe_import_failure(name, error)
            logger.warning("comfyui-partgen: %s", failure.message, exc_info=True)
            failures.append(failure)
            continue
        classes.extend(module.NODES)
    if failures:
        from .load_report import load_report_node

        classes.append(load_report_node(failures))
    return classes
