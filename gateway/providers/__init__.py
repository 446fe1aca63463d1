"""Model providers: one interface, three implementations, chosen per assistant.

``base.py`` defines the interface the engine sees (``Provider.stream`` yields
``TextDelta``, ``ToolCallRequest``, ``ModelDone``). ``openai_chat.py`` (Chat
Completions) and ``openai_responses.py`` (Responses) reach any OpenAI or
OpenAI-compatible server through the ``openai`` SDK and register themselves
under their ``api:`` value; ``offline.py`` is the embedded deterministic model;
``registry.py`` resolves an assistant's ``provider:`` to one of them. This
package imports ``gateway.errors``, ``gateway.settings`` and
``gateway.manifests``, never the engine or the API. Nothing is imported here,
so ``gateway.providers.base`` stays cheap to import.
"""
