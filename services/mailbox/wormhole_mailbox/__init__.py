"""Mailbox server."""
