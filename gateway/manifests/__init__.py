"""Manifests: the YAML model of a deployment, its validation, schema and tool schemas.

``model`` holds the msgspec Structs (and the action-kind registry the
executors fill); ``loader.load_catalog`` reads a manifests root (YAML through
``_yaml``, with positions and ``${VAR}``; Python actions described out of the
server by ``_pyfunc`` / ``_introspect``, confined by ``_confine`` before their
import-time code runs) into one immutable, validated
``catalog.Catalog``; ``validate`` holds the checks and their output formats
(``_salvage``: what of a broken document they still check);
``schema`` generates ``schemas/manifest.schema.json``; ``tools`` turns a
catalog into OpenAI tool schemas; ``seed`` converts old Assistants-API
configs; ``watch`` reloads on change (``_watch_paths``: what it watches).
This package imports nothing from the rest of the gateway but ``errors``,
``_files`` (in ``loader``), ``_registry`` (in ``model``) and ``settings`` (in
``watch``); the other packages import it. Import submodules directly: this
module re-exports nothing, so the sandbox can import ``model`` cheaply.
"""

__all__: list[str] = []
