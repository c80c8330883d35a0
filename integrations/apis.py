"""integrations: apis (layout in ../shared/STYLE.md)."""
