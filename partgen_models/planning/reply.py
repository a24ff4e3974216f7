"""A VLM's reply → a validated :class:`~.plan.PartPlan`, repairing the usual formatting slips.

VLMs asked for "JSON only" still wrap it in a code fence, add a sentence before or after, leave a
trailing comma, use typographic quotes or return the bare list. :func:`extract_json` undoes exactly
those slips; anything else (prose, truncated JSON, a part the user did not ask for) is a
:class:`PlanReplyError` whose message says what was wrong, so the planner can re-ask once and the user
knows what to change when the second answer fails too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .plan import MAX_PARTS, PartPlan, PlannedPart
from .request import MAX_NAME_CHARS, PlanRequest

MAX_PROMPT_CHARS = 4000  # edit models read a few hundred tokens; a longer "prompt" is a runaway reply
_EXCERPT = 160


class PlanReplyError(ValueError):
    """The reply is not a usable plan; ``problem`` is the short reason fed back to the VLM."""

    def __init__(self, problem: str, reply: str = "") -> None:
        self.problem = problem
        self.reply = reply
        super().__init__(problem)


def excerpt(reply: str) -> str:
    text = " ".join((reply or "").split())
    return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


def _outermost(text: str) -> str:
    """From the first ``{`` or ``[`` to the last matching closer: drops prose around the JSON."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text
    start = min(starts)
    closer = "}" if text[start] == "{" else "]"
    end = text.rfind(closer)
    return text[start:end + 1] if end > start else text[start:]


def extract_json(reply: str) -> Any:
    """The JSON value in ``reply``, after undoing code fences, surrounding prose, trailing commas and
    typographic quotes; a :class:`PlanReplyError` when none of that yields JSON."""
    text = (reply or "").strip()
    # Reasoning models (Qwen3 "thinking") put their deliberation first; the answer follows it.
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).strip()
    if not text:
        raise PlanReplyError("the reply is empty", reply)
    fenced = _FENCE.search(text)
    candidates = [text]
    if fenced:
        candidates.insert(0, fenced.group(1).strip())
    for candidate in candidates:
        for attempt in (candidate, _outermost(candidate)):
            for variant in (attempt, _TRAILING_COMMA.sub(r"\1", attempt.translate(_QUOTES))):
                try:
                    return json.loads(variant)
                except ValueError:
                    continue
                except RecursionError:  # brackets nested thousands deep: no plan, whatever else it holds
                    raise PlanReplyError(f"the reply's JSON is nested too deeply to be a plan (it starts {excerpt(text)})",
                                         reply) from None
    raise PlanReplyError(f"the reply is not JSON (it starts {excerpt(text)})", reply)


def _entries(value: Any) -> list:
    if isinstance(value, list):  # the bare list of parts
        return value
    if isinstance(value, dict):
        if isinstance(value.get("parts"), list):
            return value["parts"]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"objects": [...]}: one list under another key
            return lists[0]
        if isinstance(value.get("name"), str):  # a single part without the wrapper
            return [value]
    raise PlanReplyError('the JSON has no "parts" list')


def _text(entry: dict, keys: tuple[str, ...]) -> str:
    for key in keys:
        if isinstance(entry.get(key), str):
            return " ".join(entry[key].split())
    return ""


def _planned(entries: list) -> list[PlannedPart]:
    parts = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PlanReplyError(f"part {index + 1} of the reply is not an object with name and prompt")
        name = _text(entry, ("name", "part", "label"))
        prompt = _text(entry, ("prompt", "isolation_prompt", "instruction"))
        if not name:
            raise PlanReplyError(f"part {index + 1} of the reply has no name")
        if len(name) > MAX_NAME_CHARS:
            raise PlanReplyError(f"part {index + 1}'s name is longer than {MAX_NAME_CHARS} characters")
        if not prompt:
            raise PlanReplyError(f"the part {name!r} has no isolation prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PlanReplyError(f"the prompt of {name!r} is longer than {MAX_PROMPT_CHARS} characters")
        parts.append(PlannedPart(name, prompt, _text(entry, ("note", "user_note"))))
    return parts


def _matched_to_request(parts: list[PlannedPart], request: PlanRequest) -> list[PlannedPart]:
    """The reply's parts in the user's order and spelling; unknown, missing or repeated names are errors."""
    by_key: dict[str, PlannedPart] = {}
    for part in parts:
        key = part.name.lower()
        if key in by_key:
            raise PlanReplyError(f"the reply names the part {part.name!r} twice")
        by_key[key] = part
    wanted = {name.lower(): name for name in request.part_names}
    unknown = [part.name for part in parts if part.name.lower() not in wanted]
    if unknown:
        raise PlanReplyError(
            f"the reply names {', '.join(repr(n) for n in unknown)}, which is not among the requested parts "
            f"({', '.join(request.part_names)})"
        )
    missing = [name for key, name in wanted.items() if key not in by_key]
    if missing:
        raise PlanReplyError(f"the reply has no prompt for {', '.join(repr(n) for n in missing)}")
    return [PlannedPart(name, by_key[key].prompt, by_key[key].note) for key, name in wanted.items()]


def _proposed(parts: list[PlannedPart], request: PlanRequest) -> list[PlannedPart]:
    seen: set[str] = set()
    for part in parts:
        if part.name.lower() in seen:
            raise PlanReplyError(f"the reply names the part {part.name!r} twice")
        seen.add(part.name.lower())
    if not parts:
        raise PlanReplyError("the reply lists no parts")
    if len(parts) > request.max_parts:
        raise PlanReplyError(f"the reply lists {len(parts)} parts, more than max_parts = {request.max_parts}")
    return parts


def parse_plan_reply(reply: str, request: PlanRequest, image_size: tuple[int, int], source: str) -> PartPlan:
    """Validate ``reply`` against ``request``: names match the user's list (or 1..max_parts distinct
    proposals), each part has a prompt, at most 16 parts. Raises :class:`PlanReplyError`."""
    try:
        entries = _entries(extract_json(reply))
        if len(entries) > MAX_PARTS:
            raise PlanReplyError(f"the reply lists {len(entries)} parts; at most {MAX_PARTS} are allowed")
        parts = _planned(entries)
        parts = _matched_to_request(parts, request) if request.part_names else _proposed(parts, request)
    except PlanReplyError as error:
        raise PlanReplyError(error.problem, reply) from None
    return PartPlan(tuple(parts), tuple(image_size), source)
