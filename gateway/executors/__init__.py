"""Action kinds: one module per YAML key, each registering its config Struct.

Importing this package registers every kind (``python``, ``http``, ``sql``).
Adding a kind is one new module and one import line here. ``runner`` holds
``SandboxRunner`` (the engine's ``ActionRunner``) and is not imported here, so
the sandbox's zygote can import the kinds without the runner.
"""

from gateway.executors import http, python, sql

__all__ = ["http", "python", "sql"]
