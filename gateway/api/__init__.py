"""The HTTP surface: Litestar route handlers and what wraps them.

Modules: ``health`` (``/``, ``/health``, ``/ready``, ``/metrics``, ``/ui``),
``chat`` (``/start``, ``/chat`` JSON + SSE, ``/ws/chat``), ``threads``
(history, delete, run events, cancel), ``assistants`` (assistants, tools,
actions), ``admin`` (manifest status and reload, action invoke),
``openai_compat`` (``/v1``); ``middleware`` (correlation id, auth, rate
limit, body limit, access log), ``errors`` (the one exception-to-status
mapping), ``auth``, ``metrics``, ``logs``, ``streaming`` (SSE over a run's
log), ``schemas`` (bodies), ``services`` (the running pieces handed to
handlers), ``request`` (the request class: an undecodable body is a 400). The
api package may import the engine, the stores', runners' and providers'
interfaces, the manifests, the events, ``errors``, ``settings`` and the
private top-level helpers; nothing imports it except ``gateway.app``, which
wires it (and the CLI, for ``logs.configure_logging``).
"""
