"""One module per node operation: its settings (read once), facts, pure plan and apply."""
