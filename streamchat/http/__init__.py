"""streamchat over plain HTTP (docs/http.md), beside the websocket and the session JSON API in
``streamchat.views``:

- ``sse``: Server-Sent Events: send (or regenerate, edit) and stream the reply; follow a reply
  from ``Last-Event-ID``; stop it. Session authentication with CSRF.
- ``openai_compat``: ``/v1/chat/completions`` and ``/v1/models`` for OpenAI clients, with personal
  tokens (``Authorization: Bearer sc-…``).
- ``tokens``: the page where users make and revoke their personal tokens.
- ``responses``: what the session front ends share (JSON errors with the status of their code,
  JSON bodies, CSRF answered as JSON, the ``JsonView`` base of the JSON API's views).

The front ends are thin front ends of the one reply engine (``streamchat.streaming.engine``).
"""
