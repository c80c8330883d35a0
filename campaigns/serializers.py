"""campaigns: serializers (layout in ../shared/STYLE.md)."""
