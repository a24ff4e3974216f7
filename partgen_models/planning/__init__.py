"""MMPart's part planner: a VLM writes one isolation prompt per named part (see ``plan.PartPlan``).

``plan_parts`` asks any :class:`ChatModel` (a local Qwen3-VL from ``local_vlm``, an operator-configured
chat endpoint from ``endpoint``); ``combined_prompt`` and ``parse_plan_reply`` are the two halves for
hosts that run the VLM themselves (ComfyUI's core TextGenerate).
"""

from .plan import MAX_PARTS, PartPlan, PlannedPart
from .planner import ChatModel, ChatOptions, plan_parts, plan_preview
from .reply import PlanReplyError, extract_json, parse_plan_reply
from .request import SYSTEM_PROMPT, PlanRequest, PlanRequestError, combined_prompt, parse_part_list, user_prompt

__all__ = [
    "MAX_PARTS", "PartPlan", "PlannedPart",
    "ChatModel", "ChatOptions", "plan_parts", "plan_preview",
    "PlanReplyError", "extract_json", "parse_plan_reply",
    "SYSTEM_PROMPT", "PlanRequest", "PlanRequestError", "combined_prompt", "parse_part_list", "user_prompt",
]
