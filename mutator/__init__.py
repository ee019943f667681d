"""mutator: governed state mutation.

A typed :class:`Mutation` with an intent and a :class:`MutationContext` runs through
interceptors, policies, validation and execution in a :class:`MutationEngine`, with real
timeouts and cancellation, and leaves a change set, an audit entry and history behind.
"""

from ._changes import ChangeSet, StateChange
from ._composition import ComposedPolicy, CompositionMode, all_of, any_of, first_decisive
from ._context import ExecutionContext, MutationContext
from ._diff import diff
from ._effects import SideEffect, SideEffectContract, side_effect_payload
from ._engine import DeferredExecution, MutationEngine
from ._enums import (
    ActorType,
    BlastRadiusScope,
    ChangeType,
    MutationMode,
    ResultStatus,
    RiskLevel,
    Severity,
)
from ._errors import (
    ConcurrencyError,
    ConfigurationError,
    ExecutionTimeoutError,
    InvalidMutationError,
    MutationFailedError,
    MutatorError,
    PolicyConflictError,
    PolicyEvaluationError,
    PolicyTimeoutError,
    StateDiffError,
)
from ._evaluation import PolicyEvaluation
from ._intent import BlastRadius, MutationIntent
from ._interceptors import Interceptor, LoggingInterceptor
from ._memory import InMemoryAuditSink, InMemoryHistoryStore, NullAuditSink, NullHistoryStore
from ._metrics import InMemoryMetrics
from ._mutation import Mutation
from ._options import EngineOptions
from ._policies import (
    NOTHING,
    MutationPolicy,
    PolicyDecision,
    PolicyModification,
    PolicyRequirement,
)
from ._records import (
    AuditEntry,
    AuditOutcome,
    HistoryEntry,
    HistoryStatistics,
    MutationHistory,
    TimelineEntry,
)
from ._results import BatchResult, MutationResult
from ._serialization import SerializationError, TypeRegistry, make_converter
from ._statistics import EngineStatistics
from ._tracecontext import capture_trace_context, trace_link
from ._validation import ValidationIssue, ValidationResult
from .exports import publish
from .protocols import AuditSink, HistoryStore, MetricsCollector

# The distribution's version, read from here at build time ([tool.hatch.version]): the only copy.
__version__ = "0.1.0.dev0"

__all__ = [
    # model
    "Mutation",
    "MutationIntent",
    "RiskLevel",
    "BlastRadius",
    "BlastRadiusScope",
    "MutationContext",
    "ActorType",
    "MutationMode",
    "ExecutionContext",
    "StateChange",
    "ChangeType",
    "ChangeSet",
    "diff",
    "ValidationResult",
    "ValidationIssue",
    "Severity",
    "SideEffect",
    "SideEffectContract",
    "side_effect_payload",
    "MutationResult",
    "ResultStatus",
    "BatchResult",
    # policies
    "MutationPolicy",
    "PolicyDecision",
    "PolicyRequirement",
    "PolicyModification",
    "PolicyEvaluation",
    "NOTHING",
    "ComposedPolicy",
    "CompositionMode",
    "all_of",
    "any_of",
    "first_decisive",
    # engine
    "MutationEngine",
    "DeferredExecution",
    "EngineOptions",
    "EngineStatistics",
    "Interceptor",
    "LoggingInterceptor",
    # diagnostics
    "AuditEntry",
    "AuditOutcome",
    "AuditSink",
    "InMemoryAuditSink",
    "NullAuditSink",
    "HistoryEntry",
    "HistoryStatistics",
    "MutationHistory",
    "TimelineEntry",
    "HistoryStore",
    "InMemoryHistoryStore",
    "NullHistoryStore",
    "MetricsCollector",
    "InMemoryMetrics",
    "capture_trace_context",
    "trace_link",
    # errors
    "MutatorError",
    "ConfigurationError",
    "InvalidMutationError",
    "StateDiffError",
    "MutationFailedError",
    "ExecutionTimeoutError",
    "PolicyEvaluationError",
    "PolicyTimeoutError",
    "PolicyConflictError",
    "ConcurrencyError",
    "SerializationError",
    # serialization
    "TypeRegistry",
    "make_converter",
]


publish(globals(), __all__, __name__)
del publish
