"""The central playbook table (pack section 5) as data: loaded from playbooks.yaml, validated at start-up
(every problem at once, each naming where), then read-only."""
from .loading import load_playbooks
from .model import (
                    AgentEntry,
                    FrozenMap,
                    Playbook,
                    PlaybookError,
                    PlaybookSet,
                    Primitive,
                    RecommendedOption,
                    Step,
                    step_target,
)
from .validation import API_VERSION, CLASSIFICATIONS, KIND, parse_playbooks

__all__ = ["API_VERSION", "CLASSIFICATIONS", "KIND", "AgentEntry", "FrozenMap", "Playbook", "PlaybookError",
           "PlaybookSet", "Primitive", "RecommendedOption", "Step", "load_playbooks", "parse_playbooks", "step_target"]
