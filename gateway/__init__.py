"""Declarative gateway for AI assistants: the map of the code.

Start here. Each package opens with a docstring saying what it holds and what
it may import; imports point one way: ``api`` -> ``engine`` -> (``providers``,
``executors`` -> ``sandbox``) -> ``manifests`` -> ``settings``, ``errors``;
``store``, ``events`` and ``knowledge`` sit beside them, the top-level
``_*.py`` helpers import nothing of the gateway, and nothing imports ``api``
but ``app.py`` (and ``_cli._common``, for logging).

Start-up: ``cli.py`` (``gateway serve``, in ``_cli/server.py``) reads
``settings.Settings`` once and calls ``app.create_app``, the one place that
wires the concrete pieces (store, engine, provider registry, supervisor,
runner, reloader) into ``api.services.Services``, which every handler gets.

A chat request, from the route to the sandbox and back:

1. ``api/middleware.py`` (correlation id, auth, rate limit, body limit) and
   the route: ``api/chat.py`` (``/chat``, ``/ws/chat``) or
   ``api/openai_compat.py`` (``/v1/chat/completions``).
2. ``engine/core.py``: ``Engine.start_run`` (``start_stateless_run`` for
   ``/v1``) reads the live catalog once, takes the assistant's provider from
   ``providers/registry.py`` and starts the run as a task of the server that
   writes into a ``RunLog`` (``engine/runlog.py``); the store
   (``store/sqlite.py`` or ``store/postgres.py``) holds one active run per
   thread.
3. ``engine/run.py``: ``RunTask`` loops: history (``engine/history.py``) ->
   ``Provider.stream`` (``providers/openai_chat.py``,
   ``openai_responses.py`` or ``offline.py``) -> the round's tool calls
   through the runner -> the model again, until an answer; every message is
   stored as it completes.
4. ``executors/runner.py``: ``SandboxRunner.run`` validates the arguments,
   reads the action's secrets and hands the call to
   ``sandbox/supervisor.py`` (``Supervisor.call``) or, for ``isolation:
   inline``, to ``executors/inline.py``.
5. ``sandbox/``: the supervisor gives the call to a spare child the zygote
   (``zygote.py``) forked; the child (``worker.py``) confines itself and runs
   the action kind's ``run`` (``executors/python.py``, ``http.py``,
   ``sql.py``); ``sandbox/results.py`` turns how it ended into a
   ``ToolResult``.
6. Back up: the result goes to the model; the events go into the run log,
   which the handler reads: ``api/chat.py`` waits for the result (JSON),
   ``api/streaming.py`` turns it into SSE, ``api/openai_compat.py`` into
   OpenAI chunks. A client that leaves does not stop the run.

Hot reload: ``manifests/watch.py`` (``Reloader``) loads a changed set off the
event loop (``manifests/loader.py`` -> ``manifests/catalog.Catalog``), awaits
its ``on_swap`` hooks (``Supervisor.reload``, the runner's ``reload``, wired
in ``app.py``) and then swaps the catalog in one assignment to
``CatalogRef.current``; runs in flight keep the catalog they read. A catalog
holds the source of the user modules its load imported (``Catalog.code``):
its zygotes, restarted or not, import that, never the disk, so a push the
reload rejected never runs (``sandbox/_snapshot.py``).

Errors: ``errors.py`` (the tree), mapped to HTTP status codes only in
``api/errors.py``. Events every client sees: ``events.py``.
"""
