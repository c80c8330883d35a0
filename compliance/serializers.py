"""compliance: serializers (layout in ../shared/STYLE.md)."""
