"""The manifest model: one msgspec Struct per ``kind``, strict at the edge.

Documents are decoded in two steps (see ``loader.py``): read ``kind``, then
convert to that kind's Struct, so an error names the kind. Action kinds
(``python``, ``http``, ``sql``...) are not listed here: each lives in its own
module under ``gateway/executors/`` and registers its config Struct with
``register_action_kind``; this module only knows the base class. The JSON
Schema in ``schemas/manifest.schema.json`` is generated from these Structs
plus the registered kinds (``schema.py``), never written by hand.

This module imports nothing from the rest of the gateway but ``errors`` and
``_registry``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, TypeVar

import msgspec

from gateway._registry import add_class

__all__ = [
    "ACTION_KINDS",
    "NAME_PATTERN",
    "NAME_RULE",
    "NEWLINE_GUARD",
    "Action",
    "ActionConfig",
    "Assistant",
    "Database",
    "Example",
    "Expect",
    "FileSearch",
    "History",
    "PdfParse",
    "Provider",
    "SandboxLimits",
    "register_action_kind",
]

# `(?!\n)$`: Python's `$` (jsonschema and msgspec both use `re.search`) also matches
# before a final newline, which would let "get\n" through as a tool name. `\Z` says the
# same in Python but is not ECMA-262, the dialect of the published JSON Schema.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}(?!\n)$"
"""What every name matches: manifest names, and assistant names in API requests."""
NAME_RULE = "1 to 64 letters, digits, '_' or '-'"
"""``NAME_PATTERN`` in words, for error messages (its ``(?!\\n)`` would only puzzle)."""
NEWLINE_GUARD = "(?!\\n)"
"""What ends every pattern before its ``$``: Python's ``$`` also matches before a final
newline. Left out where a pattern is shown to a person."""
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description="Unique per kind")]


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for every manifest Struct: immutable, keyword-only, unknown fields refused."""


class ActionConfig(_Strict, frozen=True):
    """Base of an action kind's config (the value under its YAML key).

    Subclasses set ``key`` (the YAML key, e.g. ``"python"``), ``network_default``
    (whether the sandbox allows network unless the manifest says otherwise),
    and override ``check`` for cross-document validation.
    """

    key: ClassVar[str] = ""
    network_default: ClassVar[bool] = False
    inline: ClassVar[bool] = False
    """Whether ``isolation: inline`` is allowed: the kind then also implements
    ``async run_inline(call, pools)`` (see ``gateway.executors.inline``)."""

    def check(self, action: Action, ctx: CheckContext) -> list[KindProblem]:
        """Cross-document checks at load time (templates parse, database exists...).

        Runs in the server process: must not import or execute user code. Must
        depend only on this action as written and ``ctx``: a reload reuses the
        result while the document is unchanged.
        """
        return []

    def template_names(self) -> frozenset[str]:
        """The argument names this config's templates read (``gateway validate`` warns
        about those the action's ``parameters`` do not declare: the runner refuses such
        an argument, so the template never sees it). Parses only, in the server."""
        return frozenset()

    def run(self, call: CallContext) -> Any:
        """Execute one call. Runs inside the sandbox child, never in the server
        (``isolation: inline`` calls go to the kind's ``run_inline`` instead).

        May return an awaitable (async kinds); the worker awaits it. The
        return value goes to the model: a ``str`` as is, anything else as JSON.
        Raise an exception to report a tool error (its type and message go
        back to the model; the traceback only to the server log).
        """
        raise NotImplementedError

    def sandbox_warm(self) -> None:
        """Compute once, in the sandbox's zygote, what every ``run`` would compute again.

        Each call runs in a fresh fork of the zygote, so a per-process cache
        (compiled templates, say) filled by ``run`` is lost with the call; filled
        here, before the forks, it is shared by all of them. No I/O and nothing
        that depends on a call. A kind that overrides this gets a new zygote when
        its config changes (the fingerprint includes it). Errors are ignored: the
        call reports them.
        """


class KindProblem(NamedTuple):
    """A problem found by ``ActionConfig.check``.

    ``path`` is relative to the kind's YAML key (``"url"``, ``"query"``), or
    empty for the key itself; the loader turns it into a file:line:col.
    """

    path: str
    message: str


class CheckContext(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ActionConfig.check`` may look at: the rest of the manifest set."""

    root: Path
    databases: frozenset[str]


class CallContext(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one action call sees inside the sandbox child.

    ``arguments`` are already validated against the schema (defaults applied);
    ``secrets`` holds only the variables the action declared; ``databases``
    maps database names to URLs (relative sqlite paths already resolved);
    ``substituted`` the values ``${VAR}`` put into the action's kind config (and
    its database's URL): never exported to the environment (the config and the
    URL already carry them), but masked like ``secrets`` (see ``masked``).
    """

    action: str
    arguments: dict[str, Any]
    secrets: dict[str, str] = {}
    databases: dict[str, str] = {}
    root: str = "."
    timeout: float = 10.0
    substituted: tuple[str, ...] = ()

    def masked(self) -> dict[str, str]:
        """Every value masked in what leaves this call: ``secrets`` and ``substituted``."""
        if not self.substituted:
            return self.secrets
        return {**{f"${{{i}}}": v for i, v in enumerate(self.substituted)}, **self.secrets}


ACTION_KINDS: dict[str, type[ActionConfig]] = {}
"""YAML key -> config Struct, filled by ``register_action_kind`` at import."""
_C = TypeVar("_C", bound=type[ActionConfig])


def register_action_kind(cls: _C) -> _C:
    """Class decorator: register an action kind under ``cls.key``.

    Raises:
        ValueError: if the key is empty or already registered by another class.
    """
    add_class(ACTION_KINDS, cls.key, cls, what="action kind", attribute="key")
    return cls


class SandboxLimits(_Strict, frozen=True):
    """Per-action overrides of the sandbox limits."""

    memory_mb: Annotated[int, msgspec.Meta(ge=16, le=16384)] = 512
    cpu_seconds: Annotated[int, msgspec.Meta(ge=1, le=600)] | None = None
    network: bool | None = None
    max_output_kb: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 64
    max_processes: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    max_open_files: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 256
    max_file_size_mb: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 16


class Expect(_Strict, frozen=True):
    """What an example's result must satisfy (all given conditions must hold).

    ``equals`` is the JSON value the output must be, compared by type (``true`` is
    neither ``1`` nor ``"True"``), ``null`` included; leave it out for no condition.
    """

    contains: str | None = None
    equals: Any | msgspec.UnsetType = msgspec.UNSET  # UNSET, not None: `equals: null` is a value
    status: Literal["succeeded", "failed", "timed_out"] = "succeeded"


class Example(_Strict, frozen=True):
    """An example call of an action, run by ``gateway test``."""

    args: dict[str, Any] = {}
    expect: Expect = Expect()


class Action(_Strict, frozen=True, tag="action", tag_field="kind"):
    """``kind: action``: a tool the model may call.

    Exactly one registered kind key (``python``, ``http``, ``sql``...) must be
    present; after loading, ``config`` holds it decoded to its Struct and
    ``kind_key`` names it. ``parameters`` is a JSON Schema of ``type: object``;
    for Python actions it may be omitted and is then inferred from the
    function's signature. ``isolation: inline`` (only kinds whose ``inline`` is
    true) runs calls in the server process instead of the sandbox.
    """

    name: Name
    description: Annotated[str, msgspec.Meta(min_length=1)]
    parameters: (
        Annotated[
            dict[str, Any],
            # Published so editors flag `type: string` as the loader does (parameters_problems).
            msgspec.Meta(
                extra_json_schema={
                    "required": ["type"],
                    "properties": {"type": {"const": "object"}},
                }
            ),
        ]
        | None
    ) = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    secrets: list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(?!\n)$")]] = []
    sandbox: SandboxLimits = SandboxLimits()
    isolation: Annotated[
        Literal["sandbox", "inline"],
        msgspec.Meta(
            description=(
                "sandbox (default): every call in its own confined process. inline (http and "
                "sql only): in the server process with pooled connections, no sandbox limits "
                "but the timeout and max_output_kb"
            )
        ),
    ] = "sandbox"
    examples: list[Example] = []
    # Internal: filled by the loader from the one kind key present in the
    # document; the loader refuses these two keys in YAML and the schema omits them.
    kind_key: str = ""
    config: ActionConfig | None = None

    @property
    def network(self) -> bool:
        """Whether the sandbox allows network for this action."""
        if self.sandbox.network is not None:
            return self.sandbox.network
        return type(self.config).network_default if self.config is not None else False


class PdfParse(_Strict, frozen=True):
    """What parsing one PDF of ``file_search`` may cost (``file_search.pdf``).

    The PDF is parsed once per content, in a child process of the server (not
    in the sandbox), at most two at once; a PDF over a limit is searched as
    empty, logged ``knowledge_parse_limit``. The defaults are those of
    ``gateway.knowledge.PdfLimits`` (this module imports no other package; a test
    keeps them equal).
    """

    timeout: Annotated[
        float,
        msgspec.Meta(
            ge=1,  # starting the parser alone takes a good part of a second
            le=3600,
            description="seconds (wall clock, and CPU) to parse one PDF",
        ),
    ] = 120.0
    memory_mb: Annotated[
        int,
        msgspec.Meta(
            ge=64,
            le=16384,
            description="address space of the parser (MiB), plus three times the file's size",
        ),
    ] = 1024
    max_pages: Annotated[
        int,
        msgspec.Meta(ge=1, le=1_000_000, description="a PDF with more pages is not indexed"),
    ] = 10_000
    max_chars: Annotated[
        int,
        msgspec.Meta(
            ge=1000,
            le=256_000_000,
            description="a PDF with more characters of text is not indexed",
        ),
    ] = 32_000_000


class FileSearch(_Strict, frozen=True):
    """The built-in ``file_search`` tool over files relative to the manifests root.

    The size caps (MiB) are checked by validation (a file over them rejects the
    set) and again by the index at every read (a file grown since is not read).
    Their defaults are ``gateway.knowledge.DEFAULT_MAX_FILE_MB`` / ``_TOTAL_MB``
    (this module imports no other package; a test keeps them equal).
    """

    files: Annotated[list[str], msgspec.Meta(min_length=1)]
    max_results: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    max_file_size_mb: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=1024,
            description="largest knowledge file (MiB); a larger one is a validation error",
        ),
    ] = 32
    max_total_size_mb: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=4096,
            description="largest total of this assistant's knowledge files (MiB)",
        ),
    ] = 256
    pdf: PdfParse = PdfParse()


MAX_HISTORY_MESSAGES = 10_000
MAX_HISTORY_KB = 16_384


class History(_Strict, frozen=True):
    """How much of the conversation each model call gets: the newest whole turns that
    fit both limits. A limit left out is the server's (``GATEWAY_HISTORY_MAX_MESSAGES``,
    ``GATEWAY_HISTORY_MAX_KB``: 200 messages, 400 KB)."""

    max_messages: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=MAX_HISTORY_MESSAGES,
                description="At most this many messages (the newest turn is always sent)",
            ),
        ]
        | None
    ) = None
    max_kb: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=MAX_HISTORY_KB,
                description=(
                    "At most about this many thousand characters "
                    "(message text plus tool-call arguments)"
                ),
            ),
        ]
        | None
    ) = None


class Assistant(_Strict, frozen=True, tag="assistant", tag_field="kind"):
    """``kind: assistant``: instructions, a model, and the tools it may call."""

    name: Name
    display_name: str | None = None
    description: str = ""
    provider: str | None = None
    model: str = "gpt-4.1-mini"
    instructions: str = ""
    initial_message: str | None = None
    actions: list[str] = []
    code_interpreter: bool = False
    file_search: FileSearch | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tool_rounds: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    history: History = History()


class Database(_Strict, frozen=True, tag="database", tag_field="kind"):
    """``kind: database``: a connection URL in SQLAlchemy's form (sqlite or postgresql)."""

    name: Name
    url: Annotated[str, msgspec.Meta(pattern=r"^(sqlite|postgresql|postgres)(\+\w+)?://")]
    description: str = ""


class Provider(_Strict, frozen=True, tag="provider", tag_field="kind"):
    """``kind: provider``: an OpenAI-compatible model server."""

    name: Name
    base_url: str | None = None
    api_key: str | None = None
    api: Literal["chat", "responses"] = "chat"
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    default_headers: dict[str, str] = {}
    max_stream_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 600.0
    """How long one model call (retries included) may take to finish its answer."""


Document = Action | Assistant | Database | Provider
KINDS: dict[str, type[Action | Assistant | Database | Provider]] = {
    "action": Action,
    "assistant": Assistant,
    "database": Database,
    "provider": Provider,
}
