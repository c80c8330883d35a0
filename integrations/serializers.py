"""integrations: serializers (layout in ../shared/STYLE.md)."""
