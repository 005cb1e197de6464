"""The page where a user makes, names and revokes their personal API tokens.

Making a token is POST/redirect/GET, so a reload never makes a second one: the POST keeps the new
token in the session, the redirected GET takes it out again and shows it, once (a reload shows it
no more). It is never logged, never in a URL, and only a fingerprint is stored with the token's
row; the page is sent with ``Cache-Control: no-store`` so it does not linger in a cache either.
Revoking asks first, on a page of its own (no script needed), then POSTs with the CSRF token; a
user only ever sees and revokes their own tokens.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.debug import sensitive_variables
from django.views.generic import TemplateView

from ..conf import app_settings
from ..models import PersonalToken
from ..tokens import create_token, revoke

EXPIRY_CHOICES = [
    ("", gettext_lazy("Never")),
    ("7", gettext_lazy("In 7 days")),
    ("30", gettext_lazy("In 30 days")),
    ("90", gettext_lazy("In 90 days")),
    ("365", gettext_lazy("In a year")),
]
MAX_ACTIVE_TOKENS = 50
# Where the POST leaves a new token for the GET it redirects to (which removes it).
SESSION_KEY = "streamchat_new_token"


class TokenForm(forms.Form):
    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=100,
        strip=True,
        widget=forms.TextInput(
            attrs={"placeholder": gettext_lazy("e.g. laptop script"), "autocomplete": "off"}
        ),
        help_text=gettext_lazy("What the token is for, so you know which one to revoke."),
    )
    expires_in = forms.TypedChoiceField(
        label=gettext_lazy("Expires"),
        choices=EXPIRY_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
    )


class TokensView(LoginRequiredMixin, TemplateView):
    template_name = "streamchat/tokens.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.setdefault("form", TokenForm())
        # Every variable the template reads is in its context: a missing one makes Django's
        # template logger write the whole context (a new token with it) at DEBUG.
        context.setdefault("new_token", "")
        context.setdefault("new_row", None)
        context["tokens"] = list(self.owned())
        models_url = self.request.build_absolute_uri(reverse("streamchat:openai-models"))
        context["base_url"] = models_url.removesuffix("/models")
        context["chat_url"] = reverse("streamchat:chat")
        return context

    def owned(self) -> QuerySet[PersonalToken]:
        """The user's own tokens (LoginRequiredMixin made sure there is a user)."""
        user: Any = self.request.user
        return PersonalToken.objects.filter(user=user)

    @method_decorator(sensitive_variables("token", "new"))
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Shown once: taken out of the session by the first GET after the POST that made it.
        new = request.session.pop(SESSION_KEY, None)
        if isinstance(new, dict):
            row = self.owned().filter(pk=new.get("id")).first()
            token = new.get("token")
            if row is not None and isinstance(token, str):
                return self.render_to_response(self.get_context_data(new_token=token, new_row=row))
        return super().get(request, *args, **kwargs)

    @method_decorator(sensitive_variables("token"))
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        mine = self.owned()
        if request.POST.get("action") == "revoke":
            token_id = request.POST.get("token", "")
            if token_id.isdigit():
                revoke(mine.filter(pk=int(token_id)))
            return HttpResponseRedirect(reverse("streamchat:tokens"))
        form = TokenForm(request.POST)
        active = mine.filter(revoked__isnull=True).count()
        if active >= MAX_ACTIVE_TOKENS:
            form.add_error(
                None,
                _("You have %(count)s tokens: revoke one before making another.")
                % {"count": active},
            )
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        days = form.cleaned_data["expires_in"]
        expires = timezone.now() + timedelta(days=days) if days else None
        row, token = create_token(request.user, form.cleaned_data["name"], expires=expires)
        request.session[SESSION_KEY] = {"id": row.pk, "token": token}
        # 303: the browser GETs the page, and a reload repeats that GET, not this POST.
        return no_store(HttpResponseRedirect(reverse("streamchat:tokens"), status=303))

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        response = super().render_to_response(context, **kwargs)
        response["Cache-Control"] = "no-store"
        policy = app_settings.CONTENT_SECURITY_POLICY
        if policy:
            response["Content-Security-Policy"] = policy
        return response


class TokenRevokeView(TokensView):
    """``tokens/<pk>/revoke/``: asks before revoking one of the user's tokens; its form POSTs to
    the tokens page (``action=revoke``). Another user's token answers like a missing one."""

    template_name = "streamchat/token_revoke.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        row = get_object_or_404(self.owned(), pk=kwargs["pk"])
        if row.revoked is not None:
            return HttpResponseRedirect(reverse("streamchat:tokens"))
        return self.render_to_response({"token": row, "tokens_url": reverse("streamchat:tokens")})

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raise Http404  # the confirmed revoke is a POST to the tokens page


def no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response
