"""What the ``bulkprov`` commands share: the ``--config`` option, the epilog and exit codes.

Every command module in :mod:`bulkprov.commands` imports from here, and :mod:`bulkprov.cli`
takes :data:`EPILOG` for the group; nothing here imports a command or the group, so the
imports run one way (cli → commands → _shared). The helpers turn what the pipeline raises
into the documented exit codes (:func:`_fail`), run a command's coroutine on the event loop
(:func:`_run`), and read the config and its secrets with exit 2 on a bad one.

Every line a command prints goes through :func:`echo` or :func:`echo_json`: scrubbed of
secrets, and with the control characters of the values in it escaped (a user's name, a
target's answer: :func:`bulkprov.redact.shown`), so no output path can forget either.
"""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import click

from bulkprov import _json
from bulkprov.config import Config, load_config, secret_file_warnings
from bulkprov.errors import BulkProvError
from bulkprov.redact import shown, shown_json

if TYPE_CHECKING:
    from bulkprov.credentials import Secrets
    from bulkprov.pipeline import RunResult

T = TypeVar("T")

EXIT_FAILURES = 10
#: the sync completed but held disables/deletes behind the accidental-deletion threshold:
#: nothing is wrong with the run, yet an admin must look (`bulkprov staged`, `approve`)
EXIT_HELD = 9


def result_exit(result: RunResult) -> int:
    """The exit code of a sync that ran to its end: 9 when it held disables or deletes
    behind the threshold (they wait for ``bulkprov approve``; it wins over 10, since
    failed users are retried on their own), 10 when users failed, else 0."""
    if result.counts.get("held"):
        return EXIT_HELD
    return EXIT_FAILURES if result.status == "completed_with_failures" else 0


EPILOG = """\b
Exit codes: 0 done, 1 unexpected error, 2 config error, 3 auth refused,
4 Graph unreadable, 5 SCIM target failed, 6 state unusable or in use,
7 plan out of date, 8 quarantined, 9 completed but disables/deletes held by the threshold
(bulkprov approve), 10 completed with failed users (apply: or held back),
11 TLS with Graph or the target failed, 12 the target's daily request limit is spent
(resumable),
130 interrupted (resumable).
Environment: BULKPROV_CONFIG (--config), and the secrets the config names
(default BULKPROV_GRAPH_SECRET, BULKPROV_SCIM_TOKEN).
"""

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="bulkprov.toml",
    show_default=True,
    envvar="BULKPROV_CONFIG",
    show_envvar=True,
    help="The TOML configuration file.",
)


def echo(line: str, *, err: bool = False, fg: str | None = None, prefix: str = "") -> None:
    """Print one line: scrubbed, its control characters escaped (a line break in a value
    too: print several lines with several calls). ``prefix`` is printed as it is (a mark
    bulkprov styled itself, never a value)."""
    click.echo(prefix + click.style(shown(line), fg=fg) if fg else prefix + shown(line), err=err)


def echo_json(doc: Any, *, err: bool = False, sort_keys: bool = False) -> None:
    """Print one JSON line, scrubbed, with the control characters JSON leaves raw escaped."""
    text = (_json.dumps_sorted if sort_keys else _json.dumps)(doc).decode()
    click.echo(shown_json(text), err=err)


def _unwrap(exc: BaseException) -> BaseException:
    """Collapse one-member exception groups so the user sees the real error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fail(exc: BaseException) -> NoReturn:
    exc = _unwrap(exc)
    if isinstance(exc, BaseExceptionGroup):
        errors = [e for e in exc.exceptions if isinstance(e, BulkProvError)]
        if errors:
            exc = errors[0]
    if isinstance(exc, BulkProvError):
        # several lines only for bulkprov's own (a caret under an expression)
        click.secho(f"error: {shown(str(exc), lines=True)}", fg="red", err=True)
        sys.exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        click.secho("interrupted: the state is saved; run the same command to resume", err=True)
        sys.exit(130)
    raise exc


def _run(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    # A Graph page holds ~1,000 users of nested dicts alive at once: at the default gen-0
    # threshold (700) every page set off several collections that walked them. Measured
    # with gc.callbacks over a 100k-user sync: 0.49-0.69 s of CPU in ~1,460 collections,
    # against 0.03 s in 13 at 10,000, for ~10 MB more peak RSS (benchmarks/RESULTS.md).
    gc.set_threshold(10_000, 10, 10)
    previous = _terminate_like_interrupt()
    try:
        return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": _uvloop()})
    except (BulkProvError, BaseExceptionGroup, KeyboardInterrupt) as exc:
        _fail(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _terminate_like_interrupt() -> signal.Handlers | Callable[..., Any] | int | None:
    """SIGTERM stops a command as Ctrl-C does (exit 130) where nothing else handles it.

    As a container's first process (PID 1) bulkprov gets no default action for SIGTERM
    (the kernel ignores it), so ``podman stop`` or a Kubernetes pod's deletion would wait
    out the grace period and SIGKILL it. The pipeline's own handling (finish what is in
    flight, flush) replaces this one while a run provisions. Returns the handler it
    replaced (None: none replaced, e.g. not the main thread or SIGTERM already handled).
    """
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        return None


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _load(path: Path) -> Config:
    """The config at ``path`` (exit 2 if it cannot be used); a secret file others than its
    owner can read is warned about (standard error), whatever the command."""
    try:
        cfg = load_config(path)
    except BulkProvError as exc:
        _fail(exc)
    for warning in secret_file_warnings(cfg):
        echo(f"warning: {warning}", fg="yellow", err=True)
    return cfg


def _secrets(cfg: Config) -> Secrets:
    """The Graph secret and SCIM token the config names (env or file); exit 2 if unreadable."""
    from bulkprov.credentials import Secrets as _Secrets

    try:
        return _Secrets.from_config(cfg)
    except BulkProvError as exc:
        _fail(exc)
