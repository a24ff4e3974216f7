"""Planning parts with a VLM: ask, validate, re-ask once, return a :class:`~.plan.PartPlan`.

Any chat model works as the planner as long as it implements :class:`ChatModel` (the local
transformers VLM in ``local_vlm.py``, an operator-configured endpoint in ``endpoint.py``). The reply
is validated by ``reply.parse_plan_reply``; a malformed reply is re-asked once with the problem
stated (MMPart's VLM must produce one prompt per requested part, so a silent partial plan would lose
parts downstream), and a second failure is an error naming the problem and the reply's start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Protocol

import torch

from ..multiview.preprocess import pixel_range_problem
from ..runtime import Runtime, default_runtime
from .plan import PartPlan, PlannedPart
from .reply import PlanReplyError, excerpt, parse_plan_reply
from .request import (
    SYSTEM_PROMPT,
    PlanRequest,
    PlanRequestError,
    check_finite,
    reask_prompt,
    template_prompt,
    user_prompt,
)

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 8192
MAX_IMAGE_SIDE = 2048


@dataclass(frozen=True)
class ChatOptions:
    """How a planner VLM answers.

    temperature: 0 (default) decodes greedily, so the same image, request and seed give the same plan;
    above 0 samples with ``seed`` (the paper's planner is a chat VLM; plans vary with sampling).
    max_new_tokens: reply budget; a plan of 16 parts takes about 150 tokens per part. Time grows
    linearly; the KV cache of a 4B model costs about 0.15 MB per token in bf16.
    image_max_side: the image's longer side is scaled down to this before it is sent; Qwen3-VL spends one
    token per 32x32 pixels (768 px: at most 576 tokens), an endpoint bills them similarly.
    """

    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 2048
    image_max_side: int = 768

    def __post_init__(self) -> None:
        check_finite("temperature", self.temperature, 0.0, 2.0)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise PlanRequestError(f"seed must be an integer within 0..2^64-1, got {self.seed!r}")
        if not isinstance(self.max_new_tokens, int) or not 16 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise PlanRequestError(f"max_new_tokens must be within 16..{MAX_NEW_TOKENS}, got {self.max_new_tokens!r}")
        if not isinstance(self.image_max_side, int) or not 64 <= self.image_max_side <= MAX_IMAGE_SIDE:
            raise PlanRequestError(f"image_max_side must be within 64..{MAX_IMAGE_SIDE}, got {self.image_max_side!r}")


class ChatModel(Protocol):
    """A VLM that answers a conversation about one image. ``messages`` are (role, text) pairs after
    the system prompt; the image belongs to the first user turn."""

    name: str

    def chat(self, system: str, messages: list[tuple[str, str]], image: torch.Tensor, options: ChatOptions,
             runtime: Runtime) -> str: ...


def image_size_of(image: torch.Tensor) -> tuple[int, int]:
    """(height, width) of one ComfyUI IMAGE ``[1,H,W,3]`` or ``[H,W,3]``; other shapes are refused."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise PlanRequestError(
                f"the planner reads one image, got a batch of {image.shape[0]}; pick one with an image-batch node "
                f"(ImageFromBatch)"
            )
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise PlanRequestError(f"the image must be [1,H,W,3], got shape {tuple(image.shape)}")
    return int(image.shape[0]), int(image.shape[1])


def downscaled(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """``[H,W,3]`` in 0..1 with its longer side at most ``max_side`` (area filter, aspect kept)."""
    image = image[0] if image.ndim == 4 else image
    image = image[..., :3].float().clamp(0, 1)
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")
    return resized[0].permute(1, 2, 0)


def plan_parts(
    model: ChatModel,
    image: torch.Tensor,
    request: PlanRequest,
    options: ChatOptions = ChatOptions(),
    runtime: Optional[Runtime] = None,
) -> PartPlan:
    """MMPart §3.2: one isolation prompt per part of ``request`` for ``image`` (ComfyUI IMAGE, one item).

    The reply is validated; a malformed one is re-asked once with its problem stated; a second
    failure raises :class:`PlanReplyError` naming the problem. Nothing is written anywhere.
    """
    runtime = runtime or default_runtime("cpu", torch.float32)
    image_size = image_size_of(image)
    if not bool(torch.isfinite(image).all()):
        raise PlanRequestError("the image holds NaN or infinite values; check the node that made it")
    problem = pixel_range_problem(image)
    if problem:  # clamped for the VLM, 0..255 values would show it a white image
        raise PlanRequestError(f"the image {problem}")
    messages = [("user", user_prompt(request, image_size))]
    source = f"vlm:{model.name}"
    reply = model.chat(SYSTEM_PROMPT, messages, image, options, runtime)
    try:
        return parse_plan_reply(reply, request, image_size, source)
    except PlanReplyError as first:
        logger.info("the planner's reply was unusable (%s); asking once more", first.problem)
        messages += [("assistant", reply), ("user", reask_prompt(first.problem, request))]
    runtime.check_interrupt()
    reply = model.chat(SYSTEM_PROMPT, messages, image, options, runtime)
    try:
        return parse_plan_reply(reply, request, image_size, source)
    except PlanReplyError as second:
        if request.on_unusable_reply == "template":
            logger.warning("the planner %r gave no usable plan (%s); using the template prompts (fallback)",
                           model.name, second.problem)
            return template_plan(request, image_size, f"template (fallback; {source} gave no usable plan)")
        raise PlanReplyError(
            f"the planner {model.name!r} gave no usable part plan, also when asked again: {second.problem} "
            f"(reply: {excerpt(reply)}). Name the parts in 'parts' if you left it empty, use temperature 0, "
            f"raise max_new_tokens if the reply was cut off, or choose a larger VLM",
            reply,
        ) from None


def template_plan(request: PlanRequest, image_size: tuple[int, int], source: str = "template") -> PartPlan:
    """The fallback plan: :func:`~.request.template_prompt` for each named part, the wishes as note."""
    if not request.part_names:
        raise PlanRequestError("template prompts need the part names: type them in 'parts'")
    parts = tuple(PlannedPart(name, template_prompt(name, request.wishes), request.wishes) for name in request.part_names)
    return PartPlan(parts, tuple(image_size), source)


def plan_preview(plan: PartPlan) -> str:
    """Readable text for a preview node: one block per part with its prompt and honoured note."""
    height, width = plan.image_size
    lines = [f"{len(plan.parts)} parts for a {width}x{height} image (planner: {plan.source})"]
    for index, part in enumerate(plan.parts, start=1):
        lines.append(f"\n{index}. {part.name}\n   prompt: {part.prompt}")
        if part.note:
            lines.append(f"   honours: {part.note}")
    return "\n".join(lines)


def plan_from_reply(reply: str, image: torch.Tensor, request: PlanRequest, source: str = "text") -> PartPlan:
    """A reply generated elsewhere (ComfyUI's core TextGenerate fed ``request.combined_prompt``) → a plan.

    There is no second turn to re-ask in, so an unusable reply is an error that says how to get a better
    one from the host's text generator.
    """
    image_size = image_size_of(image)
    if not isinstance(reply, str):
        raise PlanRequestError(f"the reply must be text (a STRING from a text-generation node), got {type(reply).__name__}")
    try:
        return parse_plan_reply(reply, request, image_size, source)
    except PlanReplyError as error:
        if request.on_unusable_reply == "template":
            logger.warning("the generated text is no usable plan (%s); using the template prompts (fallback)", error.problem)
            return template_plan(request, image_size, f"template (fallback; {source} gave no usable plan)")
        raise PlanReplyError(
            f"the generated text is not a usable part plan: {error.problem} (reply: {excerpt(reply)}). Feed the "
            f"text generator the prompt of PartGen Plan Prompt unchanged, with sampling off and a max_length of at "
            f"least 200 tokens per part, and give it the same image; or use PartGen Plan Parts, which asks again",
            reply,
        ) from None
