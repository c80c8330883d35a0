"""contacts: tasks (layout in ../shared/STYLE.md)."""
