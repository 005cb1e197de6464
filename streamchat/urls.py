"""The chat page and its JSON API; include under any prefix (the demo uses ``chat/``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from . import views

app_name = "streamchat"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.ChatView.as_view(), name="chat"),
    path("c/<int:pk>/", views.ChatView.as_view(), name="conversation"),
    path("api/conversations/", views.ConversationListView.as_view(), name="api-conversations"),
    path(
        "api/conversations/<int:pk>/",
        views.ConversationDetailView.as_view(),
        name="api-conversation",
    ),
    path("api/models/", views.ModelListView.as_view(), name="api-models"),
]
