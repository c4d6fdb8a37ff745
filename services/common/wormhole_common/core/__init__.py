"""The sans-IO core shared by both services: the WebSocket codec (RFC 6455), client
addresses, and the small rules for logs, failures and descriptors. No module here does I/O;
the trio shells around them are the modules of the package itself.
"""
