"""integrations: selectors (layout in ../shared/STYLE.md)."""
