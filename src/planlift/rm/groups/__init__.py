"""TraceLift-Groups: the reasoning RM's data (schema, localized negatives, labelers, builder)."""

from planlift.rm.groups.build import Draft, GroupSource, GSM8KGroupSource, ProceduralGroupSource, build_groups
from planlift.rm.groups.judge import JudgeLabeler, JudgeReplyError, parse_judge_reply
from planlift.rm.groups.schema import read_groups, validate_group, write_groups

__all__ = [
    "Draft",
    "GSM8KGroupSource",
    "GroupSource",
    "JudgeLabeler",
    "JudgeReplyError",
    "ProceduralGroupSource",
    "build_groups",
    "parse_judge_reply",
    "read_groups",
    "validate_group",
    "write_groups",
]
