"""Messages between the supervisor, the zygote and a call's child: msgspec JSON frames.

Two channels, never pickle:

- the control socket (``SOCK_SEQPACKET``, one message per packet) between the
  supervisor and a zygote: ``Init`` (with the catalog's code snapshot's memory
  file attached, see ``_snapshot``)/``Ready`` once, then ``Spare`` (a
  pre-forked child's socket attached as ``SCM_RIGHTS``), ``Used``, ``Kill``
  and ``Exited``. It never carries arguments or secrets, so the long-lived
  zygote (and every later fork of it) never holds another call's secrets;
- a spare's own socket (``SOCK_SEQPACKET``), from the supervisor straight to
  the pre-forked child: one ``Start`` with the call's socket and output pipe
  attached, so handing a call over wakes no other process;
- the call socket (``SOCK_STREAM``) between the supervisor and one child: a
  length-prefixed ``CallRequest`` in; ``TAKEN``, then a length-prefixed
  ``CallResult`` out.

This module imports only msgspec, ``gateway.manifests.model``, ``gateway._unicode`` and
``gateway.sandbox._mask``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from gateway._unicode import valid_text
from gateway.manifests.model import CallContext
from gateway.sandbox._mask import mask

__all__ = [
    "HEADER",
    "TAKEN",
    "CallRequest",
    "CallResult",
    "Capabilities",
    "Control",
    "Exited",
    "FsPolicy",
    "Init",
    "Kill",
    "Limits",
    "PrivateView",
    "Ready",
    "Spare",
    "Start",
    "Used",
    "decode_control",
    "encode",
    "frame",
    "output_result",
]

HEADER = struct.Struct(">I")
"""4-byte big-endian length before every call-socket frame."""
TAKEN = b"\x06"
"""The byte a child sends on its call socket once it has read the request, before the
action runs: a child that died without sending it never ran the call (it is retried)."""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The resource limits one child applies to itself before running the action."""

    memory_mb: int = 512
    cpu_seconds: int = 11
    max_output_kb: int = 64
    max_processes: int = 32
    max_open_files: int = 256
    max_file_size_mb: int = 16


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What the kernel lets the sandbox do here (probed once in the zygote).

    Each ``*_detail`` says why a feature is missing, or what was found.
    """

    uid: int
    network_namespace: bool
    network_namespace_detail: str
    drop_privileges: bool
    drop_privileges_detail: str
    user_namespace: bool
    user_namespace_detail: str
    seccomp: bool
    seccomp_detail: str
    landlock: bool
    landlock_detail: str
    private_proc: bool = False
    private_proc_detail: str = ""
    private_tmp: bool = False
    private_tmp_detail: str = ""
    masked: bool = False
    masked_detail: str = ""


class PrivateView(msgspec.Struct, frozen=True, kw_only=True):
    """What a zygote got of its private view (``_private``): its own pid namespace and
    ``/proc``, and a tmpfs for its calls' directories; each detail says what calls see,
    or why the kernel refused."""

    private_proc: bool
    private_proc_detail: str
    private_tmp: bool
    private_tmp_detail: str
    masked: bool = False
    masked_detail: str = ""
    """Without Landlock (``_masks``): whether every protected path is covered (its folder
    shows calls only what they may read, or an empty read-only mount covers it); the
    detail is empty where Landlock keeps calls out of them instead."""


class FsPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What the supervisor knows of a call's filesystem allow-list (Landlock).

    The zygote adds the system and Python directories it finds itself.

    Attributes:
        read: read + execute beneath these (manifests root, action code).
        list_only: may be listed, nothing in it read (the gateway root).
        protected: no rule may cover these (the gateway root, the thread store,
            ``.env``): a system or ``sys.path`` directory containing one is
            narrowed to its other entries, or dropped.
        databases: the directories of the SQLite databases of the zygote's ``sql``
            actions. With Landlock each call gets its own (``Start.fs_read``); without
            it they are left unmasked for every call of the zygote (``_masks``).
        links: the gateway root as configured, when symbolic links lead to it
            (git-sync's ``current -> rev-N``): without Landlock the folders of those
            links are masked too, so a new revision stays out of the zygote's calls
            (``_masks``).
    """

    read: list[str] = []
    list_only: list[str] = []
    protected: list[str] = []
    databases: list[str] = []
    links: list[str] = []


class Init(msgspec.Struct, frozen=True, kw_only=True, tag="init"):
    """First message to a zygote: what to import and whether to cut the network."""

    paths: list[str]
    modules: list[str]
    isolate_network: bool
    probe: bool = False
    fs: FsPolicy | None = None
    call_user: Literal["own", "root", "same"] = "same"
    """Whom calls run as: ``own`` a uid of their own each (the zygote is root), ``root``
    uid 0 without any capability (root, but the deployment is closed to other uids),
    ``same`` the zygote's uid (not root)."""
    warm: list[tuple[str, dict[str, Any]]] = []
    """(kind ``module:Class``, config) of the actions whose ``sandbox_warm`` the zygote
    runs once (see ``_zygote_keys.zygote_warm``)."""
    tmp_mb: int = 256
    """Size of the tmpfs for the calls' directories (``GATEWAY_SANDBOX_TMP_MB``)."""
    code_size: int = 0
    """Bytes of the catalog's code snapshot (``_snapshot``), in the memory file whose fd
    rides along with this message; 0: none (the zygote imports no user code, or the
    catalog has none), user modules are then read from disk."""


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag="ready"):
    """The zygote's answer to ``Init``.

    ``pid``: the zygote's pid as the supervisor sees it: with a pid namespace of its
    own (``private``) not the process the supervisor started, which only waits for it.
    """

    pid: int
    network_isolated: bool
    network_error: str | None = None
    import_errors: dict[str, str] = {}
    warnings: list[str] = []
    capabilities: Capabilities | None = None
    tmp: str = ""
    private: PrivateView | None = None


class Spare(msgspec.Struct, frozen=True, kw_only=True, tag="spare"):
    """A pre-forked child ``id`` (a serial, never reused) is ready; its socket rides along."""

    id: int
    pid: int


class Used(msgspec.Struct, frozen=True, kw_only=True, tag="used"):
    """Spare ``id`` got a call: the zygote forks its replacement."""

    id: int


class Start(msgspec.Struct, frozen=True, kw_only=True, tag="start"):
    """Run one call in spare ``id``; two fds ride along: call socket, output pipe.

    ``fs_read``/``fs_write``: directories this call alone may also read, or read
    and write (its SQLite database's), on top of the zygote's allow-list.
    ``fs_wal``: SQLite database files a read-only call reads: when one is in WAL
    mode, the call may also create and write its ``-wal`` and ``-shm`` files (and
    nothing else there), which reading it needs.
    """

    id: int
    limits: Limits
    uid: int | None = None
    gid: int | None = None
    fs_read: list[str] = []
    fs_write: list[str] = []
    fs_wal: list[str] = []


class Kill(msgspec.Struct, frozen=True, kw_only=True, tag="kill"):
    """Kill spare ``id``'s whole process group now (a no-op once it is reaped)."""

    id: int


class Exited(msgspec.Struct, frozen=True, kw_only=True, tag="exited"):
    """Spare ``id`` is gone and reaped, with everything it started.

    ``status`` is ``os.waitstatus_to_exitcode`` (negative = killed by that signal).
    """

    id: int
    status: int


Control = Init | Ready | Spare | Used | Start | Kill | Exited


class CallRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a child runs: the kind's config class (``module:QualName``) and the call."""

    kind: str
    config: dict[str, Any]
    call: CallContext


class CallResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a child answers: the text for the model, or a typed error."""

    ok: bool
    output: str = ""
    truncated: bool = False
    error_type: str | None = None
    message: str = ""
    detail: dict[str, Any] = {}
    traceback: str = ""


def output_result(
    text: str, max_output_kb: int, secrets: Mapping[str, str] | None = None
) -> CallResult:
    """A successful result carrying ``text``, cut at ``max_output_kb`` with a note saying so.

    The one place the cut is made, for sandboxed and inline calls alike. The
    call's ``secrets`` are masked before the cut: one straddling it would keep
    its first characters, which no later masking recognises as the secret.
    """
    if secrets:
        text = mask(text, secrets)
    limit = max_output_kb * 1024
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON could not carry the result
        text = valid_text(text)
        encoded = text.encode("utf-8")
    if len(encoded) > limit:
        kept = encoded[:limit].decode("utf-8", errors="ignore")
        note = f"\n[output truncated: {len(encoded)} bytes, limit {max_output_kb} KB]"
        return CallResult(ok=True, output=kept + note, truncated=True)
    return CallResult(ok=True, output=text)


_control_decoder = msgspec.json.Decoder(Control)


def encode(message: msgspec.Struct) -> bytes:
    """Encode one message as JSON."""
    return msgspec.json.encode(message)


def decode_control(data: bytes) -> Control:
    """Decode one control-socket message."""
    message: Control = _control_decoder.decode(data)
    return message


def frame(message: msgspec.Struct) -> bytes:
    """Encode ``message`` as a length-prefixed call-socket frame."""
    body = msgspec.json.encode(message)
    return HEADER.pack(len(body)) + body
