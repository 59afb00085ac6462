"""The metering gateway: an ASGI app that forwards OpenAI- and Anthropic-shaped calls and meters each one."""
