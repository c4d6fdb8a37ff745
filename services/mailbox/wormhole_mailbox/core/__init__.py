"""The mailbox's sans-IO core: the protocol session and its actions, validation, limits and
quotas, allocation, paging and the read clock, usage moods, the hub's fan-out. Plain Python
taking events and explicit times and returning actions; the trio shell (connections, the
store, the batcher, the server) is the rest of the package.
"""
