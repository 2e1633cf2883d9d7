"""One family of errors, raised in the core and turned into HTTP codes at the edge.

Each error carries the status a client should see; ``turnout.router.api.errors`` is the
only place that turns them into responses. Messages say what was wrong, where,
and what was expected, because a person reads them.
"""

from __future__ import annotations


class TurnoutError(Exception):
    """Base of every error Turnout raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(TurnoutError):
    """A setting or the route table is wrong; raised at start, never per request."""


class BadRouteTable(ConfigError):
    """A route table offered for reload is refused; the last good one stays."""

    status_code = 422


class UnknownModel(TurnoutError):
    status_code = 404


class UnknownVersion(TurnoutError):
    status_code = 404


class VersionNotLoaded(TurnoutError):
    """The version exists, but no live worker has it loaded."""

    status_code = 409


class LoadFailed(TurnoutError):
    """A new version could not be loaded; the old one keeps serving."""

    status_code = 409


class UnknownDataset(TurnoutError):
    status_code = 404


class UnknownTraining(TurnoutError):
    status_code = 404


class UnknownTask(TurnoutError):
    status_code = 404


class UnknownBatch(TurnoutError):
    status_code = 404


class UnknownKey(TurnoutError):
    status_code = 404


class KeyExists(TurnoutError):
    status_code = 409


class InvalidInput(TurnoutError):
    status_code = 422


class PayloadTooLarge(TurnoutError):
    status_code = 413


class MalformedRequest(TurnoutError):
    """The request itself is broken (a Content-Length that is not a number)."""

    status_code = 400


class TaskFinished(TurnoutError):
    status_code = 409


class IdempotencyMismatch(TurnoutError):
    """An Idempotency-Key sent again with another request than its first."""

    status_code = 409


class TooManyRequests(TurnoutError):
    """Come back later: answered with ``Retry-After``."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(TooManyRequests):
    pass


class RateLimited(TooManyRequests):
    """The API key's own request rate is spent."""


class Unauthorized(TurnoutError):
    """No API key, or one that is not (or no longer) valid."""

    status_code = 401


class Forbidden(TurnoutError):
    """A valid API key without the scope the call needs."""

    status_code = 403


class NoCapacity(TurnoutError):
    """No live worker can take the route's work now, and no fallback can."""

    status_code = 503


class BrokerUnavailable(TurnoutError):
    status_code = 503


class NotReplicated(BrokerUnavailable):
    """Queued on the primary, but not confirmed by the replicas that
    TURNOUT_BROKER_REPLICAS asks for: the task exists (its claim is kept)."""


class ArtifactError(TurnoutError):
    """A model artifact is missing, outside the models folder, or fails its checksum."""


class ModelNotAdded(TurnoutError):
    """``turnout models add`` (or an upload) could not add the model: an unknown
    format, a model that does not load, a sample that fails. Nothing is left behind."""

    status_code = 422


class PickleRefused(TurnoutError):
    """A model file that unpickles, while pickles are not trusted."""

    status_code = 403


class MissingRuntime(ModelNotAdded):
    """The model's runtime (onnxruntime, xgboost, …) is not installed."""


class DeadlineExceeded(TurnoutError):
    """The request's ``timeout_s`` (or its route's ``queue_timeout_s``) ran
    out before it could start: it did not run, and never will."""

    status_code = 504


class WaitTimedOut(TurnoutError):
    """A call that must answer in the same request (v2 ``infer``) waited as
    long as it may; the request goes on, and its answer is kept."""

    status_code = 504


class ModelFailed(TurnoutError):
    """The model raised on this request's rows (v2 ``infer``: v1 answers the
    task's ``FAILURE`` instead)."""

    status_code = 422


class InvalidImage(InvalidInput):
    """An image that does not decode (found in the worker that serves it):
    truncated, corrupt, or more pixels than its header said."""
