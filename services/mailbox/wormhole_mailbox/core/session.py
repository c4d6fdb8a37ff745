"""Per-connection protocol rules, sans-IO (docs/mailbox-protocol.md §3 and §5).

Every decision about a connection is made here and returned as actions (`actions.py`) for the
shell to execute: which frames to send, when to subscribe to a mailbox and where its replay
ends, which op to run in the store, when to close and with which code, what to count.
`Session.receive(raw, now)` takes one inbound frame; when the store answers an op,
`Session.complete` (or `store_failed`) gives the rest. Nothing here touches a socket, a
database or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wormhole_mailbox.core import hashcash
from wormhole_mailbox.core.actions import (
    Action,
    CloseConnection,
    Count,
    Frame,
    Metric,
    Pause,
    Perform,
    Replayed,
    ReplayRest,
    Send,
    Subscribe,
    Unsubscribe,
    command_label,
    mood_label,
)
from wormhole_mailbox.core.addresses import PeerAddress
from wormhole_mailbox.core.allocation import is_valid_nameplate
from wormhole_mailbox.core.errors import ErrorKind, LimitRefused, ProtocolError
from wormhole_mailbox.core.limits import ClientQuota, Limits, LimitSettings, Refusal
from wormhole_mailbox.core.ops import (
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Op,
    Open,
    Page,
    Refused,
    Release,
    Result,
)
from wormhole_mailbox.core.validation import (
    FrameRefused,
    check_string,
    client_version,
    decode_frame,
    error_frame,
    malformed,
    message_id,
    optional,
    present,
    required,
)

PERMISSION_DENIED = "permission denied"
COMMAND_TIMED_OUT = "command timed out"


@dataclass(frozen=True)
class SessionConfig:
    motd: str | None = None
    advertise_version: str | None = None
    signal_error: str | None = None
    hashcash_bits: int | None = None  # None: no permission step
    allow_list: bool = True  # False: `list` answers an empty list without asking the store


def welcome_frame(config: SessionConfig, resource: str | None, address: PeerAddress) -> Frame:
    body: dict[str, Any] = {}
    if config.motd is not None:
        body["motd"] = config.motd
    if config.advertise_version is not None:
        body["current_cli_version"] = config.advertise_version
    if config.signal_error is not None:
        body["error"] = config.signal_error
    body["your-address"] = address.welcome_form()
    if config.hashcash_bits is not None:
        body["permission-required"] = {
            "hashcash": {"bits": config.hashcash_bits, "resource": resource}
        }
    return {"type": "welcome", "welcome": body}


def error(kind: ErrorKind, text: str, orig: Any) -> list[Action]:
    return [Send(error_frame(text, orig)), Count(Metric.ERRORS, kind.value)]


def _pong(msg: Frame) -> list[Action]:
    if "ping" not in msg:
        raise malformed("ping requires 'ping'")
    return [Send({"type": "pong", "pong": msg["ping"]})]


def _check_stamp(
    msg: Frame, config: SessionConfig, resource: str | None, spent: hashcash.SpentStamps,
    now: float, *, bound: bool,
) -> None:
    """`submit-permissions`: raises unless it comes before `bind` and carries a fresh,
    unspent, strong enough stamp."""
    if bound:
        raise _sequence("already bound")
    method = msg.get("method")
    stamp = msg.get("stamp")
    if method != "hashcash" or not isinstance(stamp, str):
        raise ProtocolError(ErrorKind.PERMISSION_DENIED, PERMISSION_DENIED)
    check_string(stamp, "stamp")
    assert config.hashcash_bits is not None and resource is not None
    try:
        hashcash.check_stamp(stamp, resource=resource, bits=config.hashcash_bits, now=now)
        spent.spend(stamp)
    except hashcash.StampRejected as exc:
        raise ProtocolError(ErrorKind.PERMISSION_DENIED, f"{PERMISSION_DENIED}: {exc}") from None


def _sequence(text: str) -> ProtocolError:
    return ProtocolError(ErrorKind.SEQUENCE, text)


class Session:
    """The state of one WebSocket connection (docs/mailbox-protocol.md §5.1)."""

    def __init__(
        self, config: SessionConfig, *, resource: str | None = None,
        spent: hashcash.SpentStamps | None = None, quota: ClientQuota | None = None,
    ) -> None:
        self.config = config
        self.quota = quota or Limits(LimitSettings()).client("unknown")  # the defaults, alone
        self.resource = resource or (hashcash.new_resource() if config.hashcash_bits else None)
        self.spent = spent if spent is not None else hashcash.SpentStamps()
        self.permitted = config.hashcash_bits is None
        self.app: str | None = None
        self.side: str | None = None
        self.did_allocate = self.did_claim = self.did_release = self.did_close = False
        self.claimed: str | None = None
        self.mailbox: str | None = None  # the open handle

    def start(self, address: PeerAddress) -> list[Action]:
        """The welcome, first thing on a new connection."""
        return [Send(welcome_frame(self.config, self.resource, address))]

    # -- inbound frames ------------------------------------------------------------------------

    def receive(self, raw: str | bytes, now: float) -> list[Action]:
        """One inbound frame; a client that keeps sending refused ones is slowed (`Pause`)."""
        return paced(self._receive(raw, now), self.quota, now)

    def _receive(self, raw: str | bytes, now: float) -> list[Action]:
        try:
            msg = decode_frame(raw)
        except FrameRefused as exc:
            return _invalid(exc.kind, exc.text, exc.orig)
        if "type" not in msg:
            return _invalid(ErrorKind.MALFORMED, "missing 'type'", msg)
        actions = _acked(msg)
        try:
            actions += self._dispatch(msg, now)
        except ProtocolError as exc:
            actions += error(exc.kind, exc.text, msg)
            if isinstance(exc, LimitRefused):
                actions.append(Count(Metric.REFUSALS, exc.reason))
        return actions

    def pipeline(self, raw: str | bytes, now: float, pending: list[Op]) -> list[Action] | None:
        """A frame that arrived while this connection's `pending` ops (in order) are in the
        store: its actions if it may go to the store now, else None (the shell hands it to
        `receive` once they are done). Only a valid `add` after `open`s and `add`s may: it is
        valid if they succeed, and its op is run only if they do (`Skipped`), so the
        client sees what it would have seen had the server waited
        (docs/mailbox-protocol.md §3.3)."""
        if self.app is None or not all(isinstance(op, Open | Add) for op in pending):
            return None
        try:
            msg = decode_frame(raw)
        except FrameRefused:
            return None
        opening = next((op.mailbox for op in pending if isinstance(op, Open)), None)
        mailbox = self.mailbox if self.mailbox is not None else opening
        if msg.get("type") != "add" or mailbox is None:
            return None
        try:
            add = self._add(msg, now, mailbox)
        except ProtocolError:
            return None
        return [*_acked(msg), Perform(add, msg)]

    def _dispatch(self, msg: Frame, now: float) -> list[Action]:
        kind = msg["type"]
        if kind == "ping":
            return _pong(msg)
        if kind in ("submit-permissions", "submit-permission") and self.config.hashcash_bits:
            _check_stamp(msg, self.config, self.resource, self.spent, now,
                         bound=self.app is not None)
            self.permitted = True
            return []
        if kind == "bind":
            return self._bind(msg, now)
        if self.app is None or self.side is None:
            raise ProtocolError(ErrorKind.UNBOUND, "must bind first")
        app, side = self.app, self.side
        if kind == "list":
            if not self.config.allow_list:
                return [Send({"type": "nameplates", "nameplates": []})]
            return [Perform(ListNameplates(app), msg)]
        if kind == "allocate":
            if self.did_allocate:
                raise _sequence("you already allocated one, don't be greedy")
            _allowed(self.quota.allocate(now))
            return [Perform(Allocate(app, side, now), msg)]
        if kind == "claim":
            return [Perform(self._claim(msg, now), msg)]
        if kind == "release":
            return self._release(msg, now)
        if kind == "open":
            if self.mailbox is not None:
                raise _sequence("only one open per connection")
            mailbox = required(msg, "mailbox", "open requires 'mailbox'")
            _allowed(self.quota.open(mailbox, now))
            return [Subscribe((app, mailbox)), Perform(Open(app, side, mailbox, now), msg)]
        if kind == "add":
            return [Perform(self._add(msg, now), msg)]
        if kind == "close":
            close = self._close(msg, now)
            if close.implicit_open:
                _allowed(self.quota.open(close.mailbox, now))
            return [Count(Metric.MOODS, mood_label(close.mood)), Unsubscribe(),
                    Perform(close, msg)]
        raise ProtocolError(ErrorKind.UNKNOWN_TYPE, "unknown type")

    def _bind(self, msg: Frame, now: float) -> list[Action]:
        if self.app is not None:
            raise _sequence("already bound")
        app = required(msg, "appid", "bind requires 'appid'")
        side = required(msg, "side", "bind requires 'side'")
        implementation, version = client_version(msg)
        if not self.permitted:
            return [*error(ErrorKind.PERMISSION_DENIED, PERMISSION_DENIED, msg),
                    Count(Metric.DROPPED, "permission_denied"),
                    CloseConnection(1008, PERMISSION_DENIED, flush=True)]
        return [Perform(Bind(app, side, implementation, version, now), msg)]

    def _claim(self, msg: Frame, now: float) -> Claim:
        """A valid claim, or an error; an invalid or quota-refused one changes nothing."""
        assert self.app is not None and self.side is not None
        name = present(msg, "nameplate", "claim requires 'nameplate'")
        if self.did_claim:
            raise _sequence("only one claim per connection")
        if not is_valid_nameplate(check_string(name, "nameplate")):
            raise ProtocolError(ErrorKind.INVALID_NAMEPLATE, "invalid nameplate")
        _allowed(self.quota.claim(name, now))
        return Claim(self.app, self.side, name, now)

    def _release(self, msg: Frame, now: float) -> list[Action]:
        """A release in the store; or, for a nameplate that cannot exist (only valid ones are
        ever claimed or allocated), `released` at once, as the store would answer."""
        assert self.app is not None and self.side is not None
        if self.did_release:
            raise _sequence("only one release per connection")
        name = msg.get("nameplate")
        if name is None:
            if self.claimed is None:
                raise _sequence("release without nameplate must follow claim")
            name = self.claimed
        elif not isinstance(name, str):
            raise malformed("'nameplate' must be a string")
        elif self.claimed is not None and name != self.claimed:
            raise _sequence("release and claim must use same nameplate")
        elif not is_valid_nameplate(name):
            self.did_release = True
            return [Send({"type": "released"})]
        return [Perform(Release(self.app, self.side, name, now), msg)]

    def _add(self, msg: Frame, now: float, mailbox: str | None = None) -> Add:
        """`mailbox`: the one an `open` still in the store will have opened, else the open
        one."""
        assert self.app is not None and self.side is not None
        mailbox = self.mailbox if mailbox is None else mailbox
        if mailbox is None:
            raise _sequence("must open mailbox before adding")
        phase = required(msg, "phase", "missing 'phase'")
        body = required(msg, "body", "missing 'body'")
        return Add(self.app, self.side, mailbox, phase, body, now, message_id(msg))

    def _close(self, msg: Frame, now: float) -> Close:
        assert self.app is not None and self.side is not None
        if self.did_close:
            raise _sequence("only one close per connection")
        mailbox = optional(msg, "mailbox")
        mood = optional(msg, "mood")
        if mailbox is None:
            if self.mailbox is None:
                raise _sequence("close without mailbox must follow open")
            mailbox = self.mailbox
        elif self.mailbox is not None and mailbox != self.mailbox:
            raise _sequence("open and close must use same mailbox")
        return Close(self.app, self.side, mailbox, mood, now, implicit_open=self.mailbox is None)

    # -- the store's answers and the shell's troubles ------------------------------------------

    def complete(self, perform: Perform, result: Result) -> list[Action]:
        """What follows once the store has executed `perform.op` with `result`."""
        op = perform.op
        if isinstance(result, Refused):  # UNSTORABLE: an invalid command, it changes nothing
            if isinstance(op, Claim) and result.kind is not ErrorKind.UNSTORABLE:
                # crowded, reclaimed: still the connection's one claim
                # (docs/mailbox-protocol.md §5.1)
                self.did_claim, self.claimed = True, op.nameplate
            unsubscribe: list[Action] = [Unsubscribe()] if isinstance(op, Open) else []
            return [*unsubscribe, *error(result.kind, result.error, perform.orig)]
        if isinstance(op, Bind):
            self.app, self.side = op.app, op.side
        elif isinstance(op, ListNameplates):
            assert isinstance(result, list)
            return [Send({"type": "nameplates", "nameplates": [{"id": n} for n in result]})]
        elif isinstance(op, Allocate):
            assert isinstance(result, str)
            self.did_allocate = True
            self.quota.holding(result)
            return [Send({"type": "allocated", "nameplate": result})]
        elif isinstance(op, Claim):
            assert isinstance(result, str)
            self.did_claim, self.claimed = True, op.nameplate
            self.quota.holding(op.nameplate, result)
            return [Send({"type": "claimed", "mailbox": result})]
        elif isinstance(op, Release):
            self.did_release = True
            self.quota.released(op.nameplate)
            return [Send({"type": "released"})]
        elif isinstance(op, Open):
            self.mailbox = op.mailbox
            assert isinstance(result, Page)
            return _replay(result)
        elif isinstance(op, Close):
            self.did_close = True
            self.mailbox = None
            return [Send({"type": "closed"})]
        return []  # bind; an added message comes back through the subscription

    def end(self, now: float) -> None:
        """The connection is gone: nameplates it still holds count against its address until
        they would have expired."""
        self.quota.close(now)



def _replay(page: Page) -> list[Action]:
    """The messages an `open` found, then where its replay ends: here, or (more follow)
    after the rest, which the shell reads page by page."""
    messages = page.messages
    seqs = tuple(m.seq for m in messages)
    boundary: Action = (ReplayRest(messages[-1].seq if messages else 0, seqs)
                        if page.more else Replayed(seqs))
    return [*(Send(m.frame()) for m in messages), boundary]


def store_failed(perform: Perform) -> list[Action]:
    """The store could not execute `perform.op`: report it and give up the connection."""
    unsubscribe: list[Action] = [Unsubscribe()] if isinstance(perform.op, Open) else []
    return [*unsubscribe, *error(ErrorKind.INTERNAL, "internal server error", perform.orig),
            Count(Metric.DROPPED, "database"),
            CloseConnection(1011, "database unavailable", flush=True)]


def command_timed_out(perform: Perform) -> list[Action]:
    """The store did not answer within the command's deadline: say so and close, since the
    op may still take effect later (the client reconnects and finds out)."""
    unsubscribe: list[Action] = [Unsubscribe()] if isinstance(perform.op, Open) else []
    return [*unsubscribe, *error(ErrorKind.TIMEOUT, COMMAND_TIMED_OUT, perform.orig),
            Count(Metric.DROPPED, "command_timeout"),
            CloseConnection(1011, COMMAND_TIMED_OUT, flush=True)]


def replay_failed() -> list[Action]:
    """The store failed while the rest of a mailbox was being replayed."""
    return [Unsubscribe(), Count(Metric.DROPPED, "database"),
            CloseConnection(1011, "database unavailable", flush=True)]


def too_slow() -> list[Action]:
    """The client let its queue of outbound frames fill up."""
    return [Count(Metric.DROPPED, "too_slow"),
            CloseConnection(1008, "too slow to read", flush=False)]


def ping_timeout() -> list[Action]:
    """The client did not answer a keep-alive ping in time."""
    return [Count(Metric.DROPPED, "ping_timeout"),
            CloseConnection(1001, "ping timeout", flush=False)]


def shutting_down() -> list[Action]:
    """The server is stopping: clients reconnect elsewhere or later."""
    return [CloseConnection(1001, "server shutting down", flush=False)]


def paced(actions: list[Action], quota: ClientQuota, now: float) -> list[Action]:
    """`actions`, and a `Pause` if they answer with an error past the connection's budget."""
    if any(isinstance(a, Count) and a.metric is Metric.ERRORS for a in actions) and (
            seconds := quota.erred(now)):
        return [*actions, Pause(seconds)]
    return actions


def _allowed(refusal: Refusal | None) -> None:
    """Raises if a quota of the client's address refused the command: the client gets an
    error, counted by reason, and the connection stays usable."""
    if refusal is not None:
        raise LimitRefused(refusal.reason, refusal.text)


def _acked(msg: Frame) -> list[Action]:
    """What every command with a `type` gets first: counted, and its `ack`
    (docs/mailbox-protocol.md §3.2)."""
    return [Count(Metric.COMMANDS, command_label(msg["type"])),
            Send({"type": "ack", "id": msg.get("id")})]


def _invalid(kind: ErrorKind, text: str, orig: Any) -> list[Action]:
    """A frame that is not a command at all: no ack, an error."""
    return [Count(Metric.COMMANDS, "invalid"), *error(kind, text, orig)]
