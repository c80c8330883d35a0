"""leads: serializers (layout in ../shared/STYLE.md)."""
