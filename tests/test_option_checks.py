"""Every options dataclass refuses NaN and infinities by name (NaN passes every range check)."""

import dataclasses
import math

import pytest

from partgen_models.assembly.export import ExportOptions
from partgen_models.assembly.load import LoadOptions
from partgen_models.checks import OptionError, refuse_non_finite
from partgen_models.completion.complete import CompletionOptions
from partgen_models.evaluation.evaluate import EvaluationOptions
from partgen_models.multiview.options import MultiViewOptions
from partgen_models.reconstruction.options import ReconstructionOptions
from partgen_models.rendering.asset_views import AssetViewOptions
from partgen_models.rendering.renderer import RenderOptions
from partgen_models.segmentation.sam2_backend import Sam2Options
from partgen_models.segmentation.sam3_backend import Sam3Options
from partgen_models.segmentation.segment import SegmentationOptions

OPTION_CLASSES = [
    ExportOptions, LoadOptions, CompletionOptions, EvaluationOptions, MultiViewOptions, ReconstructionOptions,
    AssetViewOptions, RenderOptions, Sam2Options, Sam3Options, SegmentationOptions,
]


def _float_fields(cls):
    defaults = cls()
    for field in dataclasses.fields(cls):
        value = getattr(defaults, field.name)
        if isinstance(value, float):
            yield field.name, False
        elif isinstance(value, tuple) and value and all(isinstance(v, float) for v in value):
            yield field.name, True


CASES = [(cls, name, is_tuple) for cls in OPTION_CLASSES for name, is_tuple in _float_fields(cls)]


def test_every_float_option_is_covered():
    names = {(cls.__name__, name) for cls, name, _ in CASES}
    assert ("MultiViewOptions", "guidance_scale") in names and ("EvaluationOptions", "thresholds") in names
    assert len(CASES) >= 15


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("cls, name, is_tuple", CASES, ids=[f"{c.__name__}.{n}" for c, n, _ in CASES])
def test_non_finite_values_are_refused_by_name(cls, name, is_tuple, bad):
    value = (0.5, bad) if is_tuple else bad
    with pytest.raises(ValueError, match=rf"^{name} is {bad}; give a finite number"):
        cls(**{name: value})


def test_nan_guidance_is_no_longer_no_guidance():
    with pytest.raises(OptionError) as error:
        MultiViewOptions(guidance_scale=float("nan"))
    assert error.value.name == "guidance_scale" and "default 4.0" in str(error.value)


def test_refuse_non_finite_raises_the_callers_error_type():
    @dataclasses.dataclass(frozen=True)
    class Custom:
        weight: float = 1.0

    class CustomError(ValueError):
        pass

    refuse_non_finite(Custom())
    with pytest.raises(CustomError, match="weight is nan"):
        refuse_non_finite(Custom(float("nan")), CustomError)
