from __future__ import annotations

from tests.support.mailbox import client, running_mailbox


async def test_two_sides_exchange(database_url: str) -> None:
    async with running_mailbox(database_url) as server, client(server) as a, client(server) as b:
        await a.bind("aaaa")
        allocated = await a.command(type="allocate")
        name = allocated["nameplate"]
        claimed = await a.command(type="claim", nameplate=name)
        mailbox = claimed["mailbox"]
        await a.ack_only(type="open", mailbox=mailbox)
        await a.ack_only(type="add", phase="pake", body="aa", id="0001")
        echo = await a.recv()
        assert echo["type"] == "message" and echo["side"] == "aaaa"
        await b.bind("bbbb")
        assert (await b.command(type="claim", nameplate=name))["mailbox"] == mailbox
        await b.ack_only(type="open", mailbox=mailbox)
        replay = await b.recv()
        assert replay == echo
