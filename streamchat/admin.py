from django.contrib import admin

from .models import ApiKey, ChatModel, Conversation, Message, RateLimit, Usage

admin.site.register([Conversation, Message, ApiKey, ChatModel, RateLimit, Usage])
