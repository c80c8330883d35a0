"""coaching: apis (layout in ../shared/STYLE.md)."""
