from django.apps import AppConfig


class CoachingConfig(AppConfig):
    """Health profiles, goals, logs, coaching sessions, AI insights and the assistant."""

    name = "coaching"
