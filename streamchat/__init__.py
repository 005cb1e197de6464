"""streamchat: streaming LLM chat through OpenRouter for any Django site."""

__version__ = "0.1.0"
