"""mutator_governance: governed mutations as durable requests.

A :class:`Governance` turns a mutation into a :class:`MutationRequest` that waits for
approvals, is resolved against the current state version and is executed exactly once.
"""

from mutator import __version__ as __version__  # one distribution, one version
from mutator.exports import publish

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
    StoreNotFoundError,
    StoreUnavailableError,
    UnknownMutationTypeError,
)
from ._execution import GovernedExecutionManager, GovernedExecutionResult, RecoverySweep
from ._governance import KEEP, ExpirySweep, Governance
from ._ledger import CHANGES_LOGGER
from ._memory import InMemoryDecisionHistory, InMemoryRequestStore, InMemoryStateStore
from ._operator import inbox, list_approvals, list_decisions
from ._quarantine import QUARANTINE_LOGGER, QuarantinedRequest, quarantine_entry
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
    expiry_deadline,
)
from ._resolution import Resolution
from ._retention import TERMINAL_STATUSES, PurgeBatch, PurgeReport, purgeable
from ._transitions import ALLOWED_TRANSITIONS, can_transition, transition
from ._worker import (
    WORKER_LOGGER,
    Backoff,
    WorkerOutcome,
    WorkerOutcomeKind,
    WorkerProgress,
    WorkerReport,
)
from .protocols import (
    DecisionHistory,
    DecisionPurger,
    ExecutionCommitter,
    ExpiryIndex,
    GovernanceStore,
    QuarantineLog,
    ReadingCommitter,
    ReadyQueue,
    ReadySignal,
    RequestPurger,
    RequestStore,
    ReservationRelease,
    StateStore,
)

__all__ = [
    # facade
    "Governance",
    "ExpirySweep",
    "ExpiryIndex",
    "expiry_deadline",
    "KEEP",
    "MutationRegistry",
    # execution
    "GovernedExecutionManager",
    "GovernedExecutionResult",
    "RecoverySweep",
    "WorkerReport",
    "WorkerOutcome",
    "WorkerOutcomeKind",
    "WorkerProgress",
    "Backoff",
    "WORKER_LOGGER",
    # workers: ready batches, wake-ups, quarantine
    "ReadyQueue",
    "ReadySignal",
    "ReservationRelease",
    "ReadingCommitter",
    "QuarantineLog",
    "QuarantinedRequest",
    "QUARANTINE_LOGGER",
    "quarantine_entry",
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
    "StoreNotFoundError",
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


publish(globals(), __all__, __name__)
del publish
