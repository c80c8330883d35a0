"""coaching: tasks (layout in ../shared/STYLE.md)."""
