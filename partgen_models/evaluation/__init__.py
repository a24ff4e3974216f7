"""Evaluating part segmentation as PartGen does: metrics, a procedural evaluation set, backends.

``python -m partgen_models.evaluation --procedural`` prints mAP50/75, seeded mAP and recall@K of the
reference backends on the procedural set; see :mod:`.cli`. Sub-modules: :mod:`.metrics` (the
protocol), :mod:`.procedural` (the objects), :mod:`.backends` (the proposal interface and oracles),
:mod:`.evaluate` (rendering ground truth and scoring).
"""

from .backends import BACKENDS, OracleBackend, PerturbedOracleBackend, ProposalBackend, SeededModeUnsupported, make_backend
from .evaluate import (
    EvaluationError,
    EvaluationOptions,
    EvaluationReport,
    EvaluationSample,
    evaluate_backend,
    folder_samples,
    markdown_table,
    prepare_sample,
    procedural_samples,
)
from .metrics import (
    ObjectScores,
    SeedPoint,
    average_precision,
    greedy_match,
    mask_iou,
    mean_scores,
    recall_at_k,
    score_object,
    seed_point,
    seeded_average_precision,
)
from .procedural import EVAL_SET_SEED, EVAL_SET_SIZE, KINDS, ProceduralObject, evaluation_set, generate_object, write_evaluation_set

__all__ = [
    "BACKENDS", "EVAL_SET_SEED", "EVAL_SET_SIZE", "KINDS", "EvaluationError", "EvaluationOptions", "EvaluationReport",
    "EvaluationSample", "ObjectScores", "OracleBackend", "PerturbedOracleBackend", "ProceduralObject", "ProposalBackend",
    "SeedPoint", "SeededModeUnsupported", "average_precision", "evaluate_backend", "evaluation_set", "folder_samples",
    "generate_object", "greedy_match", "make_backend", "markdown_table", "mask_iou", "mean_scores", "prepare_sample",
    "procedural_samples", "recall_at_k", "score_object", "seed_point", "seeded_average_precision", "write_evaluation_set",
]
