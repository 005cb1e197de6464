"""The page where a user makes, names and revokes their personal API tokens.

A new token is shown once, in the answer to the form that made it (never stored, never put in
the session or a redirect); the page is sent with ``Cache-Control: no-store`` so it does not
linger in a cache either. Revoking is a POST with the CSRF token; a user only ever sees and
revokes their own tokens.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables
from django.views.generic import TemplateView

from ..conf import app_settings
from ..models import PersonalToken
from ..tokens import create_token, revoke

EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
]
MAX_ACTIVE_TOKENS = 50


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        widget=forms.TextInput(attrs={"placeholder": "e.g. laptop script", "autocomplete": "off"}),
        help_text="What the token is for, so you know which one to revoke.",
    )
    expires_in = forms.TypedChoiceField(
        label="Expires",
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
            form.add_error(None, f"You have {active} tokens: revoke one before making another.")
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        days = form.cleaned_data["expires_in"]
        expires = timezone.now() + timedelta(days=days) if days else None
        row, token = create_token(request.user, form.cleaned_data["name"], expires=expires)
        return self.render_to_response(self.get_context_data(new_token=token, new_row=row))

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        response = super().render_to_response(context, **kwargs)
        response["Cache-Control"] = "no-store"
        policy = app_settings.CONTENT_SECURITY_POLICY
        if policy:
            response["Content-Security-Policy"] = policy
        return response
