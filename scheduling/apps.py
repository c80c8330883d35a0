from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """Availability, consultation requests, appointments and reminders."""

    name = "scheduling"
