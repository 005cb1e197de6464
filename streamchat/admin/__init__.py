"""streamchat in Django admin: API keys, chat models, rate limits, the usage ledger and its
dashboard, the chat log (read-only, for support) and users' personal API tokens.

One module per page family; importing this package registers them all on ``admin.site``. The
rate-limit inline is also added to the host's user and group admin pages when those are
registered before streamchat's admin is imported (see ``docs/admin.md``); so is the user
admin's data export action.
"""

from .chat_models import ChatModelAdmin
from .conversations import ConversationAdmin, MessageAdmin
from .export import UserDataExportMixin, add_user_export_action, export_user_data
from .keys import ApiKeyAdmin
from .limits import GroupRateLimitInline, RateLimitAdmin, UserRateLimitInline, add_limits_inlines
from .tokens import PersonalTokenAdmin
from .tools import AssistantAdmin, ToolAdmin, ToolCallAdmin
from .usage import UsageAdmin

__all__ = [
    "ApiKeyAdmin",
    "AssistantAdmin",
    "ChatModelAdmin",
    "ConversationAdmin",
    "GroupRateLimitInline",
    "MessageAdmin",
    "PersonalTokenAdmin",
    "RateLimitAdmin",
    "ToolAdmin",
    "ToolCallAdmin",
    "UsageAdmin",
    "UserDataExportMixin",
    "UserRateLimitInline",
    "add_limits_inlines",
    "add_user_export_action",
    "export_user_data",
]

add_limits_inlines()
add_user_export_action()
