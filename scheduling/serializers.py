"""scheduling: serializers (layout in ../shared/STYLE.md)."""
