"""An exception reporter filter that keeps streamchat's secrets out of error pages and error mails,
with ``DEBUG`` on as well as off.

Set it in the host's settings::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "streamchat.debug.SecretsExceptionReporterFilter"

Django's own filter (``SafeExceptionReporterFilter``) honours ``sensitive_variables`` and
``sensitive_post_parameters`` only when ``DEBUG`` is off: the technical 500 page of a development
server shows every local and every POST field. This one:

- always honours them (``is_active`` is always true), so a key posted to the admin key form and
  the locals of the functions that hold a key in clear (``keys.usable_keys``, the key form, the
  admin's verify action, ``crypto``, personal token creation) show as stars in every rendering;
- passes every other rendered value (frame locals, POST fields, ``request.META``,
  cookies, settings) through ``streamchat.scrub``, so a known key (any 12-character piece of it),
  a key-like string or a personal token that sits in some other object is masked too.

The exception's own message is not filtered (Django gives filters no hook for it): streamchat's
exceptions never carry a secret (``OpenRouterError`` scrubs its message).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.template.defaultfilters import pprint
from django.utils.datastructures import MultiValueDict
from django.views.debug import SafeExceptionReporterFilter

from .scrub import scrub


class _Rendered:
    """A value already rendered (and scrubbed): the reporter's ``pprint`` shows this text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """``SafeExceptionReporterFilter`` that is active with ``DEBUG`` on too and scrubs what it
    lets through (see the module docstring)."""

    def is_active(self, request: HttpRequest | None) -> bool:
        return True

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        # Settings, request.META and cookies all pass here.
        cleansed = super().cleanse_setting(key, value)
        return scrub(cleansed) if isinstance(cleansed, str) else cleansed

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        parameters = super().get_post_parameters(request)
        if not isinstance(parameters, MultiValueDict) or not parameters:
            return parameters
        scrubbed = parameters.copy()
        for name, values in parameters.lists():
            scrubbed.setlist(name, [scrub(v) if isinstance(v, str) else v for v in values])
        return scrubbed

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [
            (name, value if _is_stars(value, self) else _Rendered(scrub(pprint(value))))
            for name, value in variables
        ]


def _is_stars(value: Any, reporter_filter: SafeExceptionReporterFilter) -> bool:
    return isinstance(value, str) and value == reporter_filter.cleansed_substitute
