"""mutator_governance: governed mutations as durable requests.

A :class:`Governance` turns a mutation into a :class:`MutationRequest` that waits for
approvals, is resolved against the current state version and is executed exactly once.
"""

from ._approvals import ApprovalRequirement, RejectionReason
from ._commit import InMemoryCommitter, InMemoryGovernanceStore, SequentialCommitter
from ._commit_types import GovernedCommit, RequestWrite, StateWrite
from ._decisions import DecisionCode, RequestDecision, category_of, code_for
from ._enums import (
    ApprovalDecision,
    ApprovalStatus,
    CompensationKind,
    CompensationTrigger,
    DecisionCategory,
    ExecutionKind,
    LifecycleDecision,
    LinkType,
    PendingReason,
    RequestStatus,
    ResolutionDecision,
    ResolutionOutcome,
    ResolutionStrategy,
)
from ._errors import (
    AlreadyCompensatedError,
    ApprovalConfigurationError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ApprovalStateError,
    ApprovalStepError,
    ApproverMismatchError,
    CompensationError,
    CompensationNotAllowedError,
    DuplicateApproverError,
    GovernanceError,
    InvalidApprovalActionError,
    InvalidTransitionError,
    RequestAlreadyExistsError,
    RequestClaimedError,
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestNotFoundError,
    SelfApprovalError,
    StateNotFoundError,
    StoredDataError,
    StoreUnavailableError,
    UnknownMutationTypeError,
)
from ._execution import (
    GovernedExecutionManager,
    GovernedExecutionResult,
    RecoverySweep,
    WorkerReport,
)
from ._governance import KEEP, ExpirySweep, Governance
from ._ledger import CHANGES_LOGGER
from ._memory import InMemoryDecisionHistory, InMemoryRequestStore, InMemoryStateStore
from ._operator import inbox, list_approvals, list_decisions
from ._query import (
    DecisionRecord,
    RequestPage,
    RequestQuery,
    TagMatch,
    VersionedState,
    next_version,
)
from ._query_views import (
    ApprovalPage,
    ApprovalQuery,
    ApprovalView,
    DecisionPage,
    DecisionQuery,
    DecisionView,
)
from ._registry import MutationRegistry
from ._request import (
    CompensationPlan,
    ExecutionClaim,
    ExecutionDetails,
    ExecutionLink,
    MutationRequest,
)
from ._resolution import Resolution
from ._retention import TERMINAL_STATUSES, PurgeBatch, PurgeReport, purgeable
from ._transitions import ALLOWED_TRANSITIONS, can_transition, transition
from .protocols import (
    DecisionHistory,
    DecisionPurger,
    ExecutionCommitter,
    GovernanceStore,
    RequestPurger,
    RequestStore,
    StateStore,
)

__all__ = [
    # facade
    "Governance",
    "ExpirySweep",
    "KEEP",
    "MutationRegistry",
    # execution
    "GovernedExecutionManager",
    "GovernedExecutionResult",
    "RecoverySweep",
    "WorkerReport",
    # retention and observability
    "PurgeReport",
    "PurgeBatch",
    "RequestPurger",
    "DecisionPurger",
    "TERMINAL_STATUSES",
    "purgeable",
    "CHANGES_LOGGER",
    "ExecutionCommitter",
    "GovernedCommit",
    "RequestWrite",
    "StateWrite",
    "InMemoryCommitter",
    "InMemoryGovernanceStore",
    "GovernanceStore",
    "SequentialCommitter",
    # requests
    "MutationRequest",
    "RequestStatus",
    "PendingReason",
    "RequestDecision",
    "DecisionCode",
    "category_of",
    "code_for",
    "DecisionCategory",
    "LifecycleDecision",
    "ApprovalDecision",
    "ResolutionDecision",
    "ApprovalRequirement",
    "ApprovalStatus",
    "RejectionReason",
    "ExecutionDetails",
    "ExecutionClaim",
    "ExecutionLink",
    "ExecutionKind",
    "CompensationPlan",
    "CompensationKind",
    "CompensationTrigger",
    "LinkType",
    "ALLOWED_TRANSITIONS",
    "can_transition",
    "transition",
    # resolution
    "ResolutionStrategy",
    "ResolutionOutcome",
    "Resolution",
    # stores
    "RequestStore",
    "DecisionHistory",
    "StateStore",
    "InMemoryRequestStore",
    "InMemoryDecisionHistory",
    "InMemoryStateStore",
    "RequestQuery",
    "RequestPage",
    "TagMatch",
    # queries and operator views
    "ApprovalQuery",
    "ApprovalView",
    "ApprovalPage",
    "DecisionQuery",
    "DecisionView",
    "DecisionPage",
    "list_approvals",
    "list_decisions",
    "inbox",
    "DecisionRecord",
    "VersionedState",
    "next_version",
    # errors
    "GovernanceError",
    "RequestNotFoundError",
    "RequestAlreadyExistsError",
    "RequestConcurrencyError",
    "RequestNotExecutableError",
    "InvalidTransitionError",
    "StateNotFoundError",
    "UnknownMutationTypeError",
    "StoredDataError",
    "StoreUnavailableError",
    "ApprovalError",
    "ApprovalConfigurationError",
    "ApprovalStateError",
    "ApprovalNotFoundError",
    "InvalidApprovalActionError",
    "ApprovalExpiredError",
    "ApproverMismatchError",
    "ApprovalStepError",
    "SelfApprovalError",
    "DuplicateApproverError",
    "RequestClaimedError",
    "CompensationError",
    "CompensationNotAllowedError",
    "AlreadyCompensatedError",
]


def _publish() -> None:
    """Give every public class and function this package as its ``__module__`` (as anyio
    does), so reprs and tracebacks name the public module. String annotations are
    evaluated first, while their defining module can still be found."""
    import inspect
    import sys

    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if not (isinstance(value, type) or inspect.isfunction(value)):
            continue
        own = inspect.get_annotations(value) if isinstance(value, type) else None
        if own:
            scope = {**namespace, **vars(sys.modules[value.__module__])}
            evaluated = {}
            for key, annotation in own.items():
                try:
                    evaluated[key] = (
                        eval(annotation, scope) if isinstance(annotation, str) else annotation
                    )
                except NameError:  # a name only visible to type checkers: left as is
                    evaluated[key] = annotation
            value.__annotations__ = evaluated
        value.__module__ = __name__


_publish()
del _publish
