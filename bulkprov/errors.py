"""The one exception tree of bulkprov.

    BulkProvError
    ├── ConfigError                 bad TOML, a missing key, a secret that cannot be read
    │   └── MappingError            a mapping or scoping filter that cannot compile
    │       └── ExpressionSyntaxError   (defined in bulkprov.mapping; carries a caret)
    ├── SourceError                 Microsoft Graph could not be read
    │   ├── SourceAuthError         the Graph token request or a read was refused (401/403)
    │   ├── SourceTLSError          TLS with the authority or Graph failed (certificate, handshake)
    │   └── DeltaExpired            a saved delta token expired (410 / syncStateNotFound)
    ├── TargetError                 the SCIM service answered something we cannot use
    │   ├── TargetStop              the target cannot be used at all: stops the whole run at
    │   │   │                       once, never a per-user failure
    │   │   ├── TargetAuthError     401/403: the token is refused
    │   │   ├── TargetTLSError      TLS: the certificate cannot be verified, the handshake fails
    │   │   ├── TargetProxyError    the proxy refused the tunnel or wants credentials
    │   │   └── TargetDailyLimit    the target's daily request limit is spent (Zoom: resume
    │   │                           at 00:00 GMT): stops cleanly, resumable, exit code 12
    │   ├── TargetUnavailable       5xx, timeouts, resets: retried, then a per-user Failure
    │   │   └── OutcomeUnknown      a create (POST) met one of those: never re-sent blindly,
    │   │                           the caller looks for the account first (matching)
    │   ├── TargetThrottled         429 beyond the retry budget
    │   └── TargetRejected          any other 4xx for one user: a per-user Failure
    │       └── PendingInvitation   Zoom: a pending invitation holds the userName (Skipped)
    ├── UserDataError               one source user cannot be scoped or mapped: Skipped/Failure
    ├── StateError                  the SQLite state cannot be used (corrupt, newer schema, locked)
    ├── PlanStale                   ``bulkprov apply``: the source, state or config moved on
    ├── CutoverRefused              ``bulkprov migrate``: Entra's job cannot be taken over as it is
    └── RunAborted                  a safety stop (e.g. interrupted by a signal)
        └── Quarantined             too many users failed: the breaker stopped the run

Messages never contain secrets: tokens and client secrets are ``pydantic.SecretStr`` from
the config onward and HTTP headers are never put in an exception's text.
"""

from __future__ import annotations

from typing import ClassVar


class BulkProvError(Exception):
    """Base class of every error bulkprov raises on purpose."""

    #: process exit code used by the CLI when this error ends a command
    exit_code: ClassVar[int] = 1


class ConfigError(BulkProvError):
    """The configuration cannot be used; the message names the file and the key."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = ""
        if path and key:
            where = f"{path}: {key}: "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.key = key


class MappingError(ConfigError):
    """An attribute mapping or scoping filter is invalid (raised when the config loads)."""


class SourceError(BulkProvError):
    """Microsoft Graph could not be read (after retries).

    ``status``: the HTTP status Graph answered with, when it answered a final 4xx (a user
    that is not there, a page link that no longer works); ``None`` otherwise.
    """

    exit_code = 4

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SourceAuthError(SourceError):
    """Graph refused our credentials or permissions."""

    exit_code = 3


class SourceTLSError(SourceError):
    """TLS with the Graph authority or Graph failed: a certificate that cannot be verified
    (the fix is ``graph.ca_file``) or a failed handshake."""

    exit_code = 11


class DeltaExpired(SourceError):
    """The saved Graph deltaLink no longer works: the cycle falls back to a full read."""


class TargetError(BulkProvError):
    """The SCIM service gave an answer that ends this operation.

    Attributes:
        status: the HTTP status, or ``None`` for a transport failure.
        scim_type: the SCIM ``scimType`` of the error body, when one was sent.
        detail: the SCIM ``detail`` text (or a short transport description).
    """

    exit_code = 5
    retryable: ClassVar[bool] = False

    def __init__(
        self, detail: str, *, status: int | None = None, scim_type: str | None = None
    ) -> None:
        text = f"{status} {detail}" if status is not None else detail
        if scim_type:
            text = f"{text} (scimType={scim_type})"
        super().__init__(text)
        self.status = status
        self.scim_type = scim_type
        self.detail = detail


class TargetStop(TargetError):
    """The target cannot be used at all: no user can succeed, so the whole run stops at once
    with one message (never a per-user failure)."""


class TargetAuthError(TargetStop):
    """401/403 from the target: the token is wrong, expired, revoked or lacks a scope."""

    exit_code = 3


class TargetTLSError(TargetStop):
    """TLS with the target failed: its certificate cannot be verified (the fix is
    ``target.ca_file`` or the certificate), or the handshake itself failed. Not an
    authentication failure: the request never reached the service."""

    exit_code = 11


class TargetProxyError(TargetStop):
    """The proxy refused the tunnel to the target (``CONNECT`` answered 4xx) or wants
    credentials it was not given (407)."""

    exit_code = 3


class TargetDailyLimit(TargetStop):
    """The target's *daily* request limit is spent (Zoom: a 429 whose body says to resume
    at 00:00 GMT, facts.md §6.8): retrying would only fail until then, so the run stops at
    once, like every :class:`TargetStop`, and stays resumable. ``resume_at``: when (Unix time)."""

    exit_code = 12

    def __init__(self, detail: str, *, resume_at: float) -> None:
        super().__init__(detail, status=429)
        self.resume_at = resume_at


class TargetUnavailable(TargetError):
    """5xx, a timeout, or a dropped connection."""

    retryable = True


class OutcomeUnknown(TargetUnavailable):
    """A create whose result is unknown (the service may or may not have made it).

    Raised by :meth:`bulkprov.scim.client.ScimClient.send` for a POST answered 5xx, timed out
    or reset, instead of retrying it: a second POST could create the account twice. The
    caller resolves it by looking the account up (matching) before sending it again.
    """


class TargetThrottled(TargetError):
    """429 Too Many Requests (retried until the budget runs out)."""

    retryable = True

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail, status=429)
        self.retry_after = retry_after


class TargetRejected(TargetError):
    """Any other 4xx for one resource: that user ends as a Failure with this reason."""


class PendingInvitation(TargetRejected):
    """Zoom answered a lookup of the userName with 400 "User … not exist or not belong to
    this account.": an invited user has not accepted (or the invitation expired), and such
    users are neither listed nor creatable (facts.md §6.3, §6.8). The user is Skipped with
    this reason, never POSTed blindly, and looked at again in the next cycles."""


class UserDataError(BulkProvError):
    """One source user cannot be scoped or mapped (missing id, wrong types, a bad value).

    The run goes on: the user ends as a Failure (or Skipped) with this message as the reason.
    """


class StateError(BulkProvError):
    """The state database cannot be used; nothing was overwritten."""

    exit_code = 6


class PlanStale(BulkProvError):
    """A plan no longer describes what a sync would do; nothing was sent."""

    exit_code = 7


class CutoverRefused(BulkProvError):
    """``bulkprov migrate`` will not take over Entra's provisioning job as it stands (none on
    the service principal, several, one in quarantine, a cut-over that is not safe, an Entra
    job still running): nothing was written, paused or sent; the message says what to do."""

    exit_code = 2


class RunAborted(BulkProvError):
    """A run stopped on purpose before it finished (its state stays resumable)."""

    exit_code = 130


class Quarantined(RunAborted):
    """The quarantine breaker stopped the run: too many users failed (bulkprov.breaker).

    The message is the report (threshold passed, commonest reasons); the state stays
    resumable and the failed users are in escrow.
    """

    exit_code = 8
