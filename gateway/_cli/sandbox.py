"""``gateway invoke``, ``test`` and ``doctor``: actions through the real sandbox, no server.

Imports click and ``_common`` at the top, ``gateway.sandbox``,
``gateway.executors`` and (for file_search) ``gateway.knowledge`` inside the
commands. Logs go to stderr; stdout carries only the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from gateway._cli._common import (
    load_catalog_or_exit,
    load_settings,
    manifests_option,
    printable,
)

if TYPE_CHECKING:
    from gateway.manifests.catalog import Catalog
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

__all__ = ["doctor_command", "invoke_command", "test_command"]

_BUILTINS = ("code_interpreter", "file_search")
_FEATURES = (
    "network_namespace",
    "drop_privileges",
    "user_namespace",
    "seccomp",
    "landlock",
    "private_proc",
    "private_tmp",
    "masked",
)


@contextlib.asynccontextmanager
async def _sandbox(
    settings: Settings, catalog: Catalog | None, *, start: bool = True
) -> AsyncIterator[Supervisor]:
    """A started sandbox supervisor for ``catalog``, shut down on exit.

    ``start=False``: a supervisor never started, for a call that does not reach
    it (file_search, ``isolation: inline``): no zygote, no wait, and an action
    module that breaks the sandbox does not stop the check of another action.

    Raises:
        click.ClickException: the sandbox did not start (a zygote died as it imported
            the action modules, the kernel refused the asked-for call user...).
    """
    from gateway.sandbox.supervisor import Supervisor

    supervisor = Supervisor(settings)
    if not start:
        yield supervisor
        return
    try:
        await supervisor.start(catalog)
    except RuntimeError as exc:
        await supervisor.aclose()  # what it made before failing (its cgroups)
        raise click.ClickException(f"the sandbox does not start: {exc}") from None
    try:
        yield supervisor
    finally:
        await supervisor.aclose()


@click.command("invoke", short_help="Run one action through the sandbox; print its output.")
@click.argument("action")
@click.option(
    "--args",
    "args_json",
    default="{}",
    show_default=True,
    help="Arguments as a JSON object, e.g. '{\"order_id\": 1042}'.",
)
@click.option(
    "--assistant",
    default=None,
    help="The calling assistant: file_search searches its files "
    "(default: the only assistant with file_search).",
)
@manifests_option
def invoke_command(
    action: str, args_json: str, assistant: str | None, manifests_dir: str | None
) -> None:
    """Run ACTION once through the real sandbox and print its output.

    An action with `isolation: inline` runs in this process, as the server
    would run it, and so does file_search: for those the sandbox is not
    started. The arguments are validated against the action's schema
    before the sandbox starts (a malformed or invalid --args exits 1 at once,
    naming it). Prints the output on stdout, the status and duration on
    stderr; exits 1 unless the call succeeded. ACTION may also be a built-in
    (code_interpreter, file_search: it searches the files of --assistant,
    through an in-memory index).
    """
    import asyncio

    from gateway.executors.base import ToolResult
    from gateway.executors.inline import InlineExecutor
    from gateway.executors.runner import SandboxRunner
    from gateway.knowledge.index import KnowledgeIndex

    settings = load_settings(logging=True)
    catalog = load_catalog_or_exit(settings, manifests_dir)
    if action not in catalog.actions and action not in _BUILTINS:
        known = ", ".join(sorted(catalog.actions)) or "none"
        raise click.ClickException(f"unknown action {action!r} (known: {known})")
    if assistant is not None and assistant not in catalog.assistants:
        known = ", ".join(sorted(catalog.assistants)) or "none"
        raise click.ClickException(f"unknown assistant {assistant!r} (known: {known})")
    if action == "file_search" and assistant is None:
        searching = sorted(n for n, a in catalog.assistants.items() if a.file_search is not None)
        if len(searching) != 1:
            raise click.ClickException(
                "file_search searches one assistant's files: pass --assistant "
                f"(with file_search: {', '.join(searching) or 'none'})"
            )
        assistant = searching[0]
    # Refused here, before the sandbox starts (seconds): a typo costs no wait.
    _check_arguments(catalog, action, args_json)

    target = catalog.actions.get(action)
    sandboxed = action == "code_interpreter" or (
        target is not None and target.isolation != "inline"
    )

    async def run() -> ToolResult:
        async with _sandbox(settings, catalog, start=sandboxed) as supervisor:
            inline = InlineExecutor(concurrency=settings.inline_concurrency)
            knowledge = KnowledgeIndex(None) if action == "file_search" else None
            runner = SandboxRunner(supervisor, knowledge, inline=inline)
            try:
                return await runner.run(catalog, action, args_json, assistant=assistant)
            finally:
                await runner.aclose()  # the pools of an isolation: inline action
                if knowledge is not None:
                    knowledge.close()

    result = asyncio.run(run())
    click.echo(result.output)
    truncated = " (truncated)" if result.truncated else ""
    click.echo(f"{result.status} in {result.duration_ms:.1f} ms{truncated}", err=True)
    if result.status != "succeeded":
        raise SystemExit(1)


def _check_arguments(catalog: Catalog, action: str, args_json: str) -> None:
    """Validate ``--args`` for ``action`` as the runner will (parse, defaults, schema).

    Raises:
        click.ClickException: ``--args`` is not a JSON object or does not match the
            action's schema; the message names ``--args`` and the argument (exit 1).
    """
    from gateway.errors import InvalidArguments
    from gateway.executors.builtins import (
        CODE_INTERPRETER,
        code_interpreter_action,
        file_search_action,
    )
    from gateway.executors.runner import validate_arguments

    target = catalog.actions.get(action)
    if target is None:
        target = code_interpreter_action() if action == CODE_INTERPRETER else file_search_action()
    try:
        validate_arguments(target, args_json)
    except InvalidArguments as exc:
        raise click.ClickException(f"--args: {exc.message}") from None


@click.command("test", short_help="Run every action's examples in the sandbox (CI gate).")
@manifests_option
@click.option("--action", "only", multiple=True, help="Only this action (repeatable).")
def test_command(manifests_dir: str | None, only: tuple[str, ...]) -> None:
    """Run every action's `examples:` through the sandbox; exit 1 if any fails.

    Prints one line per example (ok/FAIL, action[index], status, duration) and,
    for a failure, what did not match, the action's file and line, and the start
    of the output. Run it in CI next to `gateway validate`.
    """
    import asyncio

    from gateway.executors.examples import ExampleOutcome, run_examples
    from gateway.executors.inline import InlineExecutor
    from gateway.executors.runner import SandboxRunner

    settings = load_settings(logging=True)
    catalog = load_catalog_or_exit(settings, manifests_dir)
    unknown = [name for name in only if name not in catalog.actions]
    if unknown:
        # A renamed action must not turn a CI gate into "0 passed, 0 failed".
        known = ", ".join(sorted(catalog.actions)) or "none"
        names = ", ".join(repr(name) for name in unknown)
        raise click.ClickException(f"unknown action {names} (known: {known})")

    async def run() -> list[ExampleOutcome]:
        async with _sandbox(settings, catalog) as supervisor:
            inline = InlineExecutor(concurrency=settings.inline_concurrency)
            runner = SandboxRunner(supervisor, inline=inline)
            try:
                return await run_examples(catalog, runner, only=list(only))
            finally:
                await runner.aclose()  # the pools of isolation: inline actions

    outcomes = asyncio.run(run())
    for outcome in outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        click.echo(
            f"{mark} {outcome.action}[{outcome.index}] {outcome.result.status} "
            f"{outcome.result.duration_ms:.1f} ms"
        )
        for problem in outcome.problems:
            click.echo(f"     {problem}")
        if not outcome.ok:
            # Where to fix it: a CI log shows this line, not the manifests.
            source = catalog.sources.get(f"action/{outcome.action}")
            if source is not None:
                where = printable(f"{catalog.root / source.file}:{source.line}")
                click.echo(f"     in {where} (examples[{outcome.index}])")
            # Escaped (repr): the output is the action's, or its endpoint's, and CI logs read
            # a line starting with "::" as a workflow command, terminals obey escape codes.
            click.echo(f"     output: {outcome.result.output[:300]!r}")
    failed = sum(not o.ok for o in outcomes)
    click.echo(f"{len(outcomes) - failed} passed, {failed} failed", err=True)
    if failed:
        raise SystemExit(1)


@click.command("doctor", short_help="Check the sandbox's isolation on this machine.")
def doctor_command() -> None:
    """Probe the sandbox: which isolation features work here, and a round-trip time.

    Runs a trivial code_interpreter call (best of 20); exits 1 when the sandbox
    cannot start or the call fails. No manifests are needed.
    """
    import asyncio

    import msgspec

    from gateway.executors.base import ToolResult
    from gateway.executors.runner import SandboxRunner
    from gateway.manifests.catalog import Catalog

    settings = load_settings(logging=True)

    async def run() -> tuple[dict[str, object], ToolResult, float]:
        async with _sandbox(settings, None) as supervisor:
            root = settings.root
            empty = Catalog(version="doctor", root=root, gateway_root=root, loaded_at=0)
            runner = SandboxRunner(supervisor)
            result = await runner.run(empty, "code_interpreter", {"code": "print('ok')"})
            timings = []
            if result.status == "succeeded":
                timings = [
                    (await runner.run(empty, "code_interpreter", {"code": "pass"})).duration_ms
                    for _ in range(20)
                ]
            caps = msgspec.to_builtins(supervisor.capabilities) or {}
            caps["call_user"], caps["call_user_detail"] = supervisor.call_user
            if supervisor.call_user[0] == "own":
                caps["process_limit"] = (True, "RLIMIT_NPROC on each call's own uid")
            else:
                caps["process_limit"] = supervisor.process_limit
            caps["memory_limit"] = supervisor.memory_limit
            return caps, result, min(timings, default=0.0)

    try:
        caps, result, best = asyncio.run(run())
    except RuntimeError as exc:
        raise click.ClickException(f"the sandbox does not start: {exc}") from None
    click.echo(f"running as uid {caps.get('uid')}")
    for feature in _FEATURES:
        if feature == "masked" and not caps.get("masked_detail"):
            continue  # Landlock keeps calls out of the protected paths: no mounts
        state = "yes" if caps.get(feature) else "no "
        click.echo(f"{feature:<18} {state}  {caps.get(feature + '_detail', '')}")
    who = {
        "own": "a uid of their own each (64000+slot)",
        "root": "uid 0 without any capability, under Landlock",
        "same": "the server's uid",
    }.get(str(caps.get("call_user")), "?")
    click.echo(f"{'calls_run_as':<18} {who} ({caps.get('call_user_detail', '')})")
    limited, limit_detail = cast("tuple[bool, str]", caps["process_limit"])
    click.echo(f"{'process_limit':<18} {'yes' if limited else 'no '}  {limit_detail}")
    limited, limit_detail = cast("tuple[bool, str]", caps["memory_limit"])
    click.echo(f"{'memory_limit':<18} {'yes' if limited else 'no '}  {limit_detail}")
    if caps.get("call_user") == "own":
        # Actions run as another uid: it must be able to enter the deployment and the venv.
        import gateway
        from gateway._reachable import first_unreachable

        places = (("root_reachable", settings.root), ("code_reachable", Path(gateway.__file__)))
        for what, path in places:
            blocker = first_unreachable(path)
            state = "yes" if blocker is None else "no "
            detail = "" if blocker is None else f"{blocker} cannot be entered by other users"
            click.echo(f"{what:<18} {state}  {detail}")
    if result.status != "succeeded":
        click.echo(f"sandboxed call      {result.status}: {result.output[:300]}")
        raise SystemExit(1)
    click.echo(f"sandboxed call      succeeded, best of 20: {best:.2f} ms")
