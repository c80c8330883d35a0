"""integrations: tasks (layout in ../shared/STYLE.md)."""
