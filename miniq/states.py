"""Task states in Celery's names and groups (``from miniq import states``)."""
PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})  # Celery's

# Which state wins where two are reported: the first here; any state not named (a custom
# PROGRESS, say) stands where None does, as in Celery.
PRECEDENCE = [SUCCESS, FAILURE, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING]
PRECEDENCE_LOOKUP = {name: rank for rank, name in enumerate(PRECEDENCE)}


def precedence(name: str) -> int:
    """A state's rank in PRECEDENCE: the lower, the stronger."""
    return PRECEDENCE_LOOKUP.get(name, PRECEDENCE_LOOKUP[None])


class state(str):  # noqa: N801 - Celery's name
    """A state's name that compares by precedence: ``state(PENDING) < state(SUCCESS)``."""

    def __lt__(self, other: str) -> bool:
        return precedence(self) > precedence(other)

    def __le__(self, other: str) -> bool:
        return precedence(self) >= precedence(other)

    def __gt__(self, other: str) -> bool:
        return precedence(self) < precedence(other)

    def __ge__(self, other: str) -> bool:
        return precedence(self) <= precedence(other)
