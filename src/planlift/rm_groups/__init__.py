"""TraceLift-Groups: the reasoning RM's data (schema, localized negatives, labelers, builder)."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "Draft": "build",
    "GSM8KGroupSource": "build",
    "GroupSource": "build",
    "JudgeLabeler": "judge",
    "JudgeReplyError": "judge",
    "ProceduralGroupSource": "build",
    "build_groups": "build",
    "parse_judge_reply": "judge",
    "read_groups": "schema",
    "validate_group": "schema",
    "write_groups": "schema",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
