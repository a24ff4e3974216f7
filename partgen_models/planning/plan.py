"""The MMPart part plan (``PARTGEN_PART_PLAN``): one isolation prompt per named part.

MMPart (arXiv 2509.16768, §3.2): a VLM reads the input image, the user's list of parts and their wishes
about hidden areas, and writes one prompt per part for an image-edit model, which then returns an image of
that part alone. The plan is what every planner source (local VLM, an operator-configured chat endpoint,
ComfyUI's own TextGenerate) produces and what the isolation and placement stages consume.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PARTS = 16  # MMPart plans a handful of parts; 16 bounds the per-part fan-out (edit, views, reconstruction)


@dataclass(frozen=True)
class PlannedPart:
    """One part: its name, the edit model's isolation prompt, and the user's note that prompt honours."""

    name: str
    prompt: str
    note: str = ""


@dataclass(frozen=True)
class PartPlan:
    """Planned parts in the user's order. ``image_size`` is the (height, width) of the input image the
    prompts describe: isolated images come back in that framing. ``source`` says which planner wrote it."""

    parts: tuple[PlannedPart, ...]
    image_size: tuple[int, int]
    source: str = "manual"

    def __post_init__(self) -> None:
        if not 1 <= len(self.parts) <= MAX_PARTS:
            raise ValueError(f"a part plan needs 1 to {MAX_PARTS} parts, got {len(self.parts)}")
        seen: set[str] = set()
        for part in self.parts:
            key = part.name.strip().lower()
            if not key:
                raise ValueError("a planned part has an empty name; give every part a name")
            if key in seen:
                raise ValueError(f"the part name {part.name!r} appears twice in the plan; names must be unique")
            seen.add(key)
            if not part.prompt.strip():
                raise ValueError(f"part {part.name!r} has an empty isolation prompt")

    @property
    def names(self) -> list[str]:
        return [part.name for part in self.parts]

    @property
    def prompts(self) -> list[str]:
        return [part.prompt for part in self.parts]
