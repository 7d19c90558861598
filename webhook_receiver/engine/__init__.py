"""The remediation engine, in rooms of one idea: fleet readers, the attempt loop and its planner, the outcome
recorder, the worker pool on the store's leases, the sweeper and the alert outbox."""
from ..retry_policy import attempt_policy
from .fleet_readers import Upstreams
from .remediation_engine import FeatureFlagOff, RemediationEngine
from .worker_pool import Deferred, Work

__all__ = ["Deferred", "FeatureFlagOff", "RemediationEngine", "Upstreams", "Work", "attempt_policy"]
