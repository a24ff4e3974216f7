"""What the user asks the planner for, and the text the VLM is given (MMPart §3.1-3.2).

MMPart's VLM combines "its understanding of the input image, the user's descriptive prompt, and our
system prompt" into one isolation prompt per requested part. The paper does not publish its system
prompt; :data:`SYSTEM_PROMPT` is ours, written from what §3.1-3.2 say such a prompt must do: tell the
edit model to remove everything but the part, describe the part's pose, angle, lighting and state as
in the image so the isolated part matches it, say how occluded areas look (the user's wish when there
is one: "the head under the hat is bald"; otherwise completed as the pose implies, so a rider isolated
from a horse keeps sitting in the air rather than on an imagined chair), and keep the framing so the
part can be placed back.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from .plan import MAX_PARTS

MAX_WISHES_CHARS = 4000  # a paragraph of wishes; longer text only dilutes the VLM's attention and costs tokens
MAX_NAME_CHARS = 64
UNUSABLE_REPLY_POLICIES = ("error", "template")


class PlanRequestError(ValueError):
    """The user's part list or planner settings are unusable; the message says what to change."""


def parse_part_list(text: str) -> tuple[str, ...]:
    """"hat, head; body\\nhorse" → ("hat", "head", "body", "horse"); empty text → () (the VLM proposes).

    Names keep the user's spelling (whitespace collapsed); the same name twice (any case) is an error,
    since two isolation prompts for one part would give two overlapping meshes.
    """
    names: list[str] = []
    for raw in re.split(r"[,\n;]", text or ""):
        name = " ".join(raw.split())
        if not name:
            continue
        if len(name) > MAX_NAME_CHARS:
            raise PlanRequestError(
                f"the part name {name[:MAX_NAME_CHARS]!r}... in 'parts' is longer than {MAX_NAME_CHARS} characters; "
                f"give each part a short name and put descriptions in 'wishes'"
            )
        if name.lower() in (n.lower() for n in names):
            raise PlanRequestError(f"'parts' names {name!r} twice; list every part once")
        names.append(name)
    if len(names) > MAX_PARTS:
        raise PlanRequestError(
            f"'parts' lists {len(names)} parts; at most {MAX_PARTS} can be planned (each part costs one edit, one "
            f"multi-view grid and one reconstruction). Merge small parts or run the workflow twice"
        )
    return tuple(names)


@dataclass(frozen=True)
class PlanRequest:
    """The user's side of a plan.

    part_names: the parts to isolate, in order; empty means the VLM proposes the object's main parts.
    wishes: free text about how hidden areas should look ("the head under the hat is bald").
    max_parts: bound on the parts the VLM may propose when part_names is empty (1..16; each part costs
    one edit, one multi-view grid and one reconstruction downstream). Ignored when names are given.
    on_unusable_reply: "error" (default) fails when the VLM's reply stays unusable; "template" is a
    fallback that then writes :func:`template_prompt` for each named part (small VLMs often cannot keep
    to the JSON format; the template keeps MMPart's instructions but describes nothing the VLM saw).
    """

    part_names: tuple[str, ...] = ()
    wishes: str = ""
    max_parts: int = 8
    on_unusable_reply: str = "error"

    def __post_init__(self) -> None:
        if self.on_unusable_reply not in UNUSABLE_REPLY_POLICIES:
            raise PlanRequestError(
                f"on_unusable_reply must be one of {', '.join(UNUSABLE_REPLY_POLICIES)}, got {self.on_unusable_reply!r}"
            )
        if self.on_unusable_reply == "template" and not self.part_names:
            raise PlanRequestError(
                "on_unusable_reply = template needs the part names: type them in 'parts' (the template cannot propose parts)"
            )
        if not isinstance(self.max_parts, int) or not 1 <= self.max_parts <= MAX_PARTS:
            raise PlanRequestError(f"max_parts must be an integer within 1..{MAX_PARTS}, got {self.max_parts!r}")
        if len(self.part_names) > MAX_PARTS:
            raise PlanRequestError(f"at most {MAX_PARTS} parts can be planned, got {len(self.part_names)}")
        if len(self.wishes) > MAX_WISHES_CHARS:
            raise PlanRequestError(
                f"'wishes' is {len(self.wishes)} characters long; keep it under {MAX_WISHES_CHARS} "
                f"(one or two sentences per part)"
            )

    @classmethod
    def from_text(cls, parts: str, wishes: str = "", max_parts: int = 8, on_unusable_reply: str = "error") -> "PlanRequest":
        return cls(parse_part_list(parts), (wishes or "").strip(), max_parts, on_unusable_reply)

    @property
    def limit(self) -> int:
        """How many parts the reply may hold."""
        return len(self.part_names) if self.part_names else self.max_parts


SYSTEM_PROMPT = """\
You plan how to split the object in an image into separate parts for 3D modelling. An image-editing \
model will receive the same image once per part, together with the instruction you write for that \
part, and must return an image that shows that part alone.

For every part write one isolation instruction for the image-editing model that:
1. says to remove everything in the image except this part, and names what to remove;
2. describes the part exactly as it appears in the image: its shape, colours, materials, pose, \
orientation and viewing angle, lighting and state (open, bent, worn, ...), so the isolated part \
matches the original;
3. says how the areas of the part that other parts hide in the image must look once they are \
uncovered. Follow the user's wishes about hidden areas when they concern this part; otherwise complete \
them plausibly and consistently with the part's pose, without adding supporting objects (a rider \
isolated from a horse keeps the riding pose in the air, with nothing under them);
4. asks for a plain white background, no shadow, no other object, the same framing, camera, scale and \
image size as the input image, and the part at the same position in the frame.

Reply with one JSON object and nothing else, no Markdown, no code fence:
{"parts": [{"name": "<part name>", "prompt": "<isolation instruction>", "note": "<the user's wish this \
prompt honours, or an empty string>"}]}
"""


def _image_line(image_size: tuple[int, int]) -> str:
    height, width = image_size
    return f"The input image is {width} x {height} pixels."


def user_prompt(request: PlanRequest, image_size: tuple[int, int]) -> str:
    """The user turn: the parts (or how many to propose), the wishes, the image size."""
    if request.part_names:
        names = ", ".join(json.dumps(name, ensure_ascii=False) for name in request.part_names)
        parts = (
            f"Isolate exactly these {len(request.part_names)} parts, in this order, using these names "
            f"verbatim: {names}."
        )
    else:
        parts = (
            f"Choose the object's main separable parts yourself: at least 1 and at most {request.max_parts}, "
            f"each with a short lowercase English name, no two with the same name."
        )
    wishes = request.wishes or "none; complete hidden areas plausibly."
    return f"{parts}\nUser's wishes about hidden areas: {wishes}\n{_image_line(image_size)}"


def combined_prompt(request: PlanRequest, image_size: tuple[int, int]) -> str:
    """One text holding the system prompt and the request, for hosts whose text generator takes a
    single prompt (ComfyUI's core TextGenerate wraps it in the model's own chat template)."""
    return f"{SYSTEM_PROMPT}\n{user_prompt(request, image_size)}"


def reask_prompt(problem: str, request: PlanRequest) -> str:
    """The second user turn after an unusable reply: what was wrong and the format again."""
    names = (
        f" The names must be exactly: {', '.join(request.part_names)}." if request.part_names else
        f" Propose 1 to {request.max_parts} parts with distinct names."
    )
    return (
        f"Your reply could not be used: {problem}. Reply again with only the JSON object "
        f'{{"parts": [{{"name": ..., "prompt": ..., "note": ...}}]}}, one entry per part.{names}'
    )


def template_prompt(name: str, wishes: str) -> str:
    """The fallback isolation prompt for one part: MMPart's instructions without the VLM's description
    of the part (so pose, lighting and state are only asked to stay as in the image)."""
    hidden = f" as the user wishes: {wishes}" if wishes else " plausibly, consistent with its pose, adding nothing under it"
    return (
        f"Remove everything from the image except the {name}. Keep the {name} exactly as it appears in the image: the "
        f"same shape, colours, materials, pose, orientation, viewing angle, lighting and state. Complete the areas of the "
        f"{name} that other parts hide{hidden}. Plain white background, no shadow, no other object; the same framing, "
        f"camera, scale and image size as the input image, with the {name} at the same position in the frame."
    )


def check_finite(name: str, value: float, low: float, high: float) -> None:
    """Refuse NaN/inf and out-of-range settings with the setting's name."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise PlanRequestError(f"{name} must be a finite number within {low}..{high}, got {value!r}")
