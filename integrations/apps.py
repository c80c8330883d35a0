from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """Inbound events, the outbox relay, provider adapters and outbound webhooks."""

    name = "integrations"
