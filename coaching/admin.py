"""coaching: admin (layout in ../shared/STYLE.md)."""
