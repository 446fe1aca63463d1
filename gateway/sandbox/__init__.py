"""The sandbox: every action call runs in a confined child process, never in the server.

Server side: ``supervisor.Supervisor`` (built by ``gateway.app`` and the
``invoke`` / ``test`` / ``doctor`` commands, called by
``gateway.executors.runner``; the inline executor reuses ``results``) starts
the zygotes, queues calls under ``GATEWAY_SANDBOX_CONCURRENCY``, hands each
call to a pre-forked child, enforces the timeout and turns the outcome into a
``ToolResult`` (``results``), with ``_channels`` (its sockets and pipes),
``_zygote_keys`` (which zygotes a catalog needs, and when a reload must
replace one), ``_fs_policy`` (the Landlock allow-list), ``_call_user`` (whom
calls run as) and ``_cgroup`` (the pids and memory bounds per zygote, and the
memory bound of all of them). Child
side, in a separate ``python -I -B`` interpreter: ``zygote`` forks the
children, ``worker`` is one child (confine, run the action kind, answer),
``probes`` tests what the kernel grants,
``_snapshot`` imports the catalog's user modules from the code its load
validated (``Catalog.code``, carried in a memory file), never from disk;
``protocol`` is the messages between them; ``_linux``, ``_landlock``,
``_seccomp`` and ``_libc`` wrap the kernel calls, ``_cleanup`` removes a
call's directory (a large one in a remover process the zygote forks).

Child-side modules import only the standard library, msgspec, the private
top-level helpers and ``gateway.manifests.model`` at the top (``_snapshot``
and ``zygote`` also ``gateway.manifests.catalog``, whose imports are the same,
and ``_introspect``'s fresh-source loader; what they load, every fork shares);
the zygote then imports the action kinds (``gateway.executors``) and the
catalog's code. The supervisor side also
imports ``gateway.executors.base`` / ``_limit`` / ``builtins``, ``gateway.manifests`` and
``gateway.settings``. This module imports nothing, so the zygote's
``import gateway.sandbox...`` stays cheap.
"""
