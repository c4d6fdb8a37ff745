"""The relay's sans-IO core: the handshake parser, the connection state machine, pairing and
the rendezvous, usage records and pair statistics. The trio shell (connections, the waiting
room, the splice relay, the server) is the rest of the package.
"""
