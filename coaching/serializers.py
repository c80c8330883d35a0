"""coaching: serializers (layout in ../shared/STYLE.md)."""
