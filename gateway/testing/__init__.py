"""Test helpers shipped with the gateway, for our tests and users' own.

``fake_openai.FakeOpenAI`` is an OpenAI-compatible server on loopback with
scripted answers and injectable faults; ``pytest_plugin`` exposes it as a
``fake_openai`` fixture. This package imports nothing from the rest of the
gateway, so it is cheap to use from any test suite.
"""
