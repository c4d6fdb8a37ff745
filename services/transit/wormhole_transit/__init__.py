"""Transit relay."""
