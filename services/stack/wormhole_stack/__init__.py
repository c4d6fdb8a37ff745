"""`wormhole-stack`: the mailbox, the relay and an embedded PostgreSQL in one command."""
