from django.apps import AppConfig


class LeadsConfig(AppConfig):
    """Lead capture, sources and assignment, deals and pipelines, scoring and CLV."""

    name = "leads"
