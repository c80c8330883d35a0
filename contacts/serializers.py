"""contacts: serializers (layout in ../shared/STYLE.md)."""
