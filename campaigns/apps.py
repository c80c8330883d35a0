from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    """Email and SMS sequences, sends, tracking, suppression and unsubscribe."""

    name = "campaigns"
