"""The chat page, its JSON API, Server-Sent Events, the tokens page and the OpenAI-compatible API;
include under any prefix (the demo uses ``chat/``, so OpenAI clients get ``base_url=…/chat/v1``).
docs/http.md describes every endpoint."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from django.views.i18n import JavaScriptCatalog

from . import views
from .http import attachments, openai_compat, sse, tokens

app_name = "streamchat"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.ChatView.as_view(), name="chat"),
    path("c/<int:pk>/", views.ChatView.as_view(), name="conversation"),
    path("api/conversations/", views.ConversationListView.as_view(), name="api-conversations"),
    path(
        "api/conversations/new/",
        views.ConversationCreateView.as_view(),
        name="api-conversation-create",
    ),
    path(
        "api/conversations/<int:pk>/",
        views.ConversationDetailView.as_view(),
        name="api-conversation",
    ),
    path(
        "api/conversations/<int:pk>/export/",
        views.ConversationExportView.as_view(),
        name="api-conversation-export",
    ),
    path("api/models/", views.ModelListView.as_view(), name="api-models"),
    path(
        "api/attachments/",
        attachments.AttachmentUploadView.as_view(),
        name="api-attachments",
    ),
    path(
        "api/attachments/<int:pk>/",
        attachments.AttachmentView.as_view(),
        name="api-attachment",
    ),
    # gettext() for the page's scripts: streamchat's djangojs catalog in the request's language.
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["streamchat"]), name="jsi18n"),
    # Server-Sent Events
    path("api/stream/", sse.stream_reply, name="api-stream"),
    path("api/replies/<int:pk>/events/", sse.follow_reply, name="api-reply-events"),
    path("api/replies/<int:pk>/stop/", sse.stop_reply, name="api-reply-stop"),
    path(
        "api/replies/<int:pk>/tools/<str:call>/confirm/",
        sse.confirm_tool,
        name="api-tool-confirm",
    ),
    # Personal tokens, and the OpenAI-compatible API they open
    path("tokens/", tokens.TokensView.as_view(), name="tokens"),
    path("tokens/<int:pk>/revoke/", tokens.TokenRevokeView.as_view(), name="token-revoke"),
    path("v1/chat/completions", openai_compat.chat_completions, name="openai-chat-completions"),
    path("v1/models", openai_compat.models, name="openai-models"),
]
