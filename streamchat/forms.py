"""Admin forms: the write-only API key form, chat model settings, and rate limits.

The API key form never renders a secret back: its input is always empty (also when the form is
redisplayed with errors), leaving it blank on a change keeps the stored secret, and no error
message quotes what was typed.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth.models import Group
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import crypto
from .keys import key_hint
from .models import ApiKey, Assistant, ChatModel, RateLimit

# OpenRouter keys look like "sk-or-v1-" + 64 hex digits; accept any "sk-or-" key of a sane shape.
KEY_PREFIX = "sk-or-"
KEY_SHAPE = re.compile(r"^sk-or-[A-Za-z0-9_-]{8,200}$")
MODEL_ID_SHAPE = re.compile(r"^[A-Za-z0-9._~:/@+-]+$")
# The simulator takes a scenario's parameters as a query string inside the id
# ("simulator/stall?after=10&comments=1", docs/simulator.md); OpenRouter's own ids have none.
SIMULATOR_PREFIX = "simulator/"
_PARAM = r"[A-Za-z0-9_]+=[A-Za-z0-9._~%+:-]*"
QUERY_SHAPE = re.compile(rf"^{_PARAM}(&{_PARAM})*$")


def model_id_error(model_id: str) -> str | None:
    """Why ``model_id`` is not a model id admins may enter, or None when it is one."""
    base, question, query = model_id.partition("?")
    if not MODEL_ID_SHAPE.match(base):
        return str(_("Use OpenRouter's model id, like openai/gpt-4o (no spaces)."))
    if question and not base.startswith(SIMULATOR_PREFIX):
        return str(
            _(
                "Only the simulator's models (simulator/…) take parameters after “?”; "
                "OpenRouter's model ids have none."
            )
        )
    if question and not QUERY_SHAPE.match(query):
        return str(_("Write the simulator's parameters as name=value pairs joined by “&”."))
    return None


class ApiKeyForm(forms.ModelForm):
    secret = forms.CharField(
        label=_("Secret key"),
        required=False,
        strip=True,
        # render_value=False: the value typed is not sent back, not even after a validation error.
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false", "size": 60}
        ),
        help_text=_(
            "Paste the key from openrouter.ai/settings/keys (it starts with “sk-or-”). "
            "It is stored encrypted and never shown again; leave this empty to keep the current "
            "key."
        ),
    )

    class Meta:
        model = ApiKey
        fields = ["label", "secret", "is_active", "priority"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["secret"].required = True
            self.fields["secret"].help_text = _(
                "Paste the key from openrouter.ai/settings/keys (it starts with “sk-or-”). "
                "It is stored encrypted and never shown again."
            )

    @sensitive_variables("secret")
    def clean_secret(self) -> str:
        secret: str = self.cleaned_data.get("secret") or ""
        if not secret:
            return ""
        # The messages describe the problem without quoting the value: form errors are rendered
        # into the page and may be logged.
        if any(ch.isspace() for ch in secret):
            raise forms.ValidationError(
                _("The key contains spaces or line breaks. Paste it again as one piece."),
                code="whitespace",
            )
        if not secret.startswith(KEY_PREFIX):
            raise forms.ValidationError(
                _("This is not an OpenRouter key: OpenRouter keys start with “sk-or-”."),
                code="prefix",
            )
        if not KEY_SHAPE.match(secret):
            raise forms.ValidationError(
                _(
                    "This does not look like a whole OpenRouter key: after “sk-or-” it should have "
                    "at least 8 letters, digits or dashes. Check that you copied all of it."
                ),
                code="shape",
            )
        return secret

    @sensitive_variables("secret")
    def save(self, commit: bool = True) -> ApiKey:
        key: ApiKey = super().save(commit=False)
        secret = self.cleaned_data.get("secret")
        if secret:
            key.secret_encrypted = crypto.encrypt(secret)
            key.hint = key_hint(secret)
            # A new secret starts with a clean record.
            key.last_error, key.last_error_at, key.last_verified, key.account = "", None, None, {}
        if commit:
            key.save()
        return key


class FallbackModelsField(forms.CharField):
    """A JSON list of model ids, edited as one id per line."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return "" if value is None else str(value)

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        text = super().to_python(value) or ""
        ids = [part.strip() for part in re.split(r"[\s,]+", text) if part.strip()]
        for model_id in ids:
            if model_id_error(model_id):
                raise forms.ValidationError(
                    _("%(id)s is not a model id (like openai/gpt-4o)."),
                    code="model_id",
                    params={"id": model_id},
                )
        # Order matters (OpenRouter tries them in turn); duplicates do not.
        return list(dict.fromkeys(ids))


class ChatModelForm(forms.ModelForm):
    fallback_models = FallbackModelsField(
        label=_("Fallback models"),
        required=False,
        help_text=_(
            "One model id per line. OpenRouter tries them in this order when this model fails "
            "(sent as its “models” list)."
        ),
    )

    class Meta:
        model = ChatModel
        fields = [
            "model_id",
            "display_name",
            "enabled",
            "is_default",
            "default_temperature",
            "max_tokens",
            "system_prompt",
            "fallback_models",
            "prompt_price",
            "completion_price",
            "context_length",
            "max_completion_tokens",
        ]
        widgets = {"system_prompt": forms.Textarea(attrs={"rows": 4, "cols": 80})}

    def clean_model_id(self) -> str:
        model_id: str = self.cleaned_data["model_id"].strip()
        error = model_id_error(model_id)
        if error:
            raise forms.ValidationError(error, code="model_id")
        return model_id

    def clean_default_temperature(self) -> Any:
        value = self.cleaned_data.get("default_temperature")
        if value is not None and not 0 <= value <= 2:
            raise forms.ValidationError(_("Temperature goes from 0 to 2."), code="range")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("is_default") and not data.get("enabled"):
            self.add_error("is_default", _("The default model must be enabled."))
        model_id = data.get("model_id")
        if model_id and model_id in (data.get("fallback_models") or []):
            self.add_error("fallback_models", _("A model cannot be its own fallback."))
        return data


class ChatModelListForm(forms.ModelForm):
    """The changelist's "enabled" checkboxes: the default model cannot be switched off there."""

    class Meta:
        model = ChatModel
        fields = ["enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Admin's changelist gives an editable cell no <label>: name the checkbox after its row.
        self.fields["enabled"].widget.attrs["aria-label"] = _("Enabled: %(model)s") % {
            "model": self.instance
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.is_default and not data.get("enabled"):
            raise forms.ValidationError(
                _("%(model)s is the default model: choose another default before disabling it."),
                code="default_disabled",
                params={"model": self.instance},
            )
        return data


class RateLimitForm(forms.ModelForm):
    """The scope follows from the target: a user, a group, or neither (the site default)."""

    class Meta:
        model = RateLimit
        fields = ["user", "group", *RateLimit.LIMIT_FIELDS]
        help_texts = {
            "user": _(
                "Limits for one user: they replace the user's group and site default limits."
            ),
            "group": _(
                "Limits for a group's members: a user in several groups gets the most generous."
            ),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "group" in self.fields:
            self.fields["group"].queryset = Group.objects.order_by("name")
        for name in RateLimit.LIMIT_FIELDS:
            if name in self.fields and not self.fields[name].help_text:
                self.fields[name].help_text = _("Blank: no limit.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        user, group = data.get("user"), data.get("group")
        if user and group:
            raise forms.ValidationError(
                _("Choose a user or a group, not both (leave both empty for the site default)."),
                code="two_targets",
            )
        scope = (
            RateLimit.Scope.USER
            if user
            else RateLimit.Scope.GROUP
            if group
            else RateLimit.Scope.DEFAULT
        )
        self.instance.scope = scope
        if scope == RateLimit.Scope.DEFAULT:
            others = RateLimit.objects.filter(scope=RateLimit.Scope.DEFAULT).exclude(
                pk=self.instance.pk
            )
            if others.exists():
                raise forms.ValidationError(
                    _(
                        "There is already a site default. Edit it, or choose a user or a group "
                        "for this one."
                    ),
                    code="second_default",
                )
        return data


class InlineRateLimitForm(forms.ModelForm):
    """The limits inline on a user's (or a group's) admin page: the target is the page's object."""

    scope = RateLimit.Scope.USER

    class Meta:
        model = RateLimit
        fields = list(RateLimit.LIMIT_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set before validation: the model's check constraint ties the scope to the target.
        self.instance.scope = self.scope
        for name in RateLimit.LIMIT_FIELDS:
            self.fields[name].help_text = _("Blank: no limit.")


class GroupRateLimitForm(InlineRateLimitForm):
    scope = RateLimit.Scope.GROUP


class AssistantForm(forms.ModelForm):
    """An assistant names a chat model by its id: one admin has enabled (else no send could use
    it), the temperature in OpenRouter's range."""

    class Meta:
        model = Assistant
        fields = (
            "name",
            "description",
            "enabled",
            "model",
            "temperature",
            "system_prompt",
            "tools",
        )

    def clean_model(self) -> str:
        model_id = str(self.cleaned_data["model"]).strip()
        if not ChatModel.objects.filter(model_id=model_id, enabled=True).exists():
            raise forms.ValidationError(
                _("No enabled chat model has this id (Chat models lists them).")
            )
        return model_id

    def clean_temperature(self) -> Any:
        value = self.cleaned_data.get("temperature")
        if value is not None and not 0 <= value <= 2:
            raise forms.ValidationError(_("Between 0 and 2."))
        return value
