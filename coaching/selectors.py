"""coaching: selectors (layout in ../shared/STYLE.md)."""
