"""Action kinds: one module per YAML key, each registering its config Struct.

Importing this package registers every kind (``python``, ``http``, ``sql``).
Adding a kind is one new module and one import line here.
"""
