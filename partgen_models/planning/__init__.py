"""MMPart's part planner: a VLM writes one isolation prompt per named part (see ``plan.PartPlan``)."""

from .plan import MAX_PARTS, PartPlan, PlannedPart

__all__ = ["MAX_PARTS", "PartPlan", "PlannedPart"]
