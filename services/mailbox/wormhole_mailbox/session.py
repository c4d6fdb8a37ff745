"""Per-connection protocol rules, sans-IO (spec section 2 and 3).

`Session.receive(frame, now)` validates one inbound frame against the connection's state and
returns a `Step`: the replies to write at once (ack, error, pong) and at most one `Op` for the
state store. When the store answers, `Session.complete(op, result)` gives the remaining replies
and updates the connection's state. Nothing here touches a socket, a database or a clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wormhole_mailbox import hashcash
from wormhole_mailbox.addresses import PeerAddress
from wormhole_mailbox.allocation import is_valid_nameplate
from wormhole_mailbox.ops import (
    Add,
    Allocate,
    Bind,
    Claim,
    Close,
    ListNameplates,
    Message,
    Op,
    Open,
    Refused,
    Release,
    Result,
)

Frame = dict[str, Any]

PERMISSION_DENIED = "permission denied"


@dataclass(frozen=True)
class WelcomeConfig:
    motd: str | None = None
    advertise_version: str | None = None
    signal_error: str | None = None
    hashcash_bits: int | None = None  # None: no permission step


@dataclass
class Step:
    replies: list[Frame] = field(default_factory=list)
    op: Op | None = None
    orig: Frame | None = None  # the parsed command, echoed in a later error
    close: bool = False  # close the connection after writing the replies


class ProtocolError(Exception):
    """A command the session refuses; the text goes to the client as `error`."""


def error_frame(text: str, orig: Any) -> Frame:
    return {"type": "error", "error": text, "orig": orig}


def _decode(raw: str | bytes) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _storable(value: str, key: str) -> str:
    """PostgreSQL text holds no NUL and only valid UTF-8 (no lone surrogates)."""
    if "\x00" in value:
        raise ProtocolError(f"'{key}' must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"'{key}' must be valid Unicode") from None
    return value


def _storable_json(value: Any, key: str) -> Any:
    """The same for every string inside a JSON value stored as jsonb (a message `id`)."""
    if isinstance(value, str):
        _storable(value, key)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, key)
    elif isinstance(value, dict):
        for name, item in value.items():
            _storable(name, key)
            _storable_json(item, key)
    return value


def _string(msg: Frame, key: str, missing: str) -> str:
    if key not in msg:
        raise ProtocolError(missing)
    value = msg[key]
    if not isinstance(value, str):
        raise ProtocolError(f"'{key}' must be a string")
    return _storable(value, key)


def _optional_string(msg: Frame, key: str) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"'{key}' must be a string")
    return _storable(value, key)


def _client_version(msg: Frame) -> tuple[str | None, str | None]:
    value = msg.get("client_version")
    if value is None:
        return None, None
    if not isinstance(value, list) or len(value) < 2:
        raise ProtocolError("'client_version' must be a list of [implementation, version]")
    return (_storable(str(value[0]), "client_version"),
            _storable(str(value[1]), "client_version"))


class Session:
    """The state of one WebSocket connection (spec 2.4)."""

    def __init__(
        self, config: WelcomeConfig, *, resource: str | None = None,
        spent: hashcash.SpentStamps | None = None,
    ) -> None:
        self.config = config
        self.resource = resource or (hashcash.new_resource() if config.hashcash_bits else None)
        self.spent = spent if spent is not None else hashcash.SpentStamps()
        self.permitted = config.hashcash_bits is None
        self.app: str | None = None
        self.side: str | None = None
        self.did_allocate = False
        self.did_claim = False
        self.claimed: str | None = None
        self.did_release = False
        self.mailbox: str | None = None  # the open handle
        self.did_close = False

    # -- welcome -------------------------------------------------------------------------------

    def welcome(self, address: PeerAddress) -> Frame:
        body: dict[str, Any] = {}
        if self.config.motd is not None:
            body["motd"] = self.config.motd
        if self.config.advertise_version is not None:
            body["current_cli_version"] = self.config.advertise_version
        if self.config.signal_error is not None:
            body["error"] = self.config.signal_error
        body["your-address"] = address.welcome_form()
        if self.config.hashcash_bits is not None:
            body["permission-required"] = {
                "hashcash": {"bits": self.config.hashcash_bits, "resource": self.resource}
            }
        return {"type": "welcome", "welcome": body}

    # -- inbound frames ------------------------------------------------------------------------

    def receive(self, raw: str | bytes, now: float) -> Step:
        try:
            msg = _decode(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            return Step([error_frame("message is not valid JSON", text)])
        if not isinstance(msg, dict):
            return Step([error_frame("message must be a JSON object", msg)])
        if "type" not in msg:
            return Step([error_frame("missing 'type'", msg)])
        step = Step([{"type": "ack", "id": msg.get("id")}], orig=msg)
        try:
            self._dispatch(msg, now, step)
        except ProtocolError as exc:
            step.replies.append(error_frame(str(exc), msg))
        return step

    def _dispatch(self, msg: Frame, now: float, step: Step) -> None:
        kind = msg["type"]
        if kind == "ping":
            if "ping" not in msg:
                raise ProtocolError("ping requires 'ping'")
            step.replies.append({"type": "pong", "pong": msg["ping"]})
            return
        if kind in ("submit-permissions", "submit-permission") and self.config.hashcash_bits:
            self._submit_permissions(msg, now, step)
            return
        if kind == "bind":
            step.op = self._bind(msg, now, step)
            return
        if self.app is None or self.side is None:
            raise ProtocolError("must bind first")
        app, side = self.app, self.side
        if kind == "list":
            step.op = ListNameplates(app)
        elif kind == "allocate":
            if self.did_allocate:
                raise ProtocolError("you already allocated one, don't be greedy")
            step.op = Allocate(app, side, now)
        elif kind == "claim":
            step.op = self._claim(msg, now)
        elif kind == "release":
            step.op = self._release(msg, now)
        elif kind == "open":
            if self.mailbox is not None:
                raise ProtocolError("only one open per connection")
            step.op = Open(app, side, _string(msg, "mailbox", "open requires 'mailbox'"), now)
        elif kind == "add":
            step.op = self._add(msg, now)
        elif kind == "close":
            step.op = self._close(msg, now)
        else:
            raise ProtocolError("unknown type")

    def _submit_permissions(self, msg: Frame, now: float, step: Step) -> None:
        if self.app is not None:
            raise ProtocolError("already bound")
        method = msg.get("method")
        stamp = msg.get("stamp")
        if method != "hashcash" or not isinstance(stamp, str):
            raise ProtocolError(PERMISSION_DENIED)
        assert self.config.hashcash_bits is not None and self.resource is not None
        try:
            hashcash.check_stamp(
                stamp, resource=self.resource, bits=self.config.hashcash_bits, now=now
            )
            self.spent.spend(stamp)
        except hashcash.StampRejected as exc:
            raise ProtocolError(f"{PERMISSION_DENIED}: {exc}") from None
        self.permitted = True

    def _bind(self, msg: Frame, now: float, step: Step) -> Bind | None:
        if self.app is not None:
            raise ProtocolError("already bound")
        app = _string(msg, "appid", "bind requires 'appid'")
        side = _string(msg, "side", "bind requires 'side'")
        implementation, version = _client_version(msg)
        if not self.permitted:
            step.close = True
            raise ProtocolError(PERMISSION_DENIED)
        self.app, self.side = app, side
        return Bind(app, side, implementation, version, now)

    def _claim(self, msg: Frame, now: float) -> Claim:
        assert self.app is not None and self.side is not None
        name = _string(msg, "nameplate", "claim requires 'nameplate'")
        if self.did_claim:
            raise ProtocolError("only one claim per connection")
        # Set before validation: a failed claim still uses up the connection's one claim.
        self.did_claim = True
        self.claimed = name
        if not is_valid_nameplate(name):
            raise ProtocolError("invalid nameplate")
        return Claim(self.app, self.side, name, now)

    def _release(self, msg: Frame, now: float) -> Release:
        assert self.app is not None and self.side is not None
        if self.did_release:
            raise ProtocolError("only one release per connection")
        name = _optional_string(msg, "nameplate")
        if name is not None:
            if self.claimed is not None and name != self.claimed:
                raise ProtocolError("release and claim must use same nameplate")
        else:
            if self.claimed is None:
                raise ProtocolError("release without nameplate must follow claim")
            name = self.claimed
        return Release(self.app, self.side, name, now)

    def _add(self, msg: Frame, now: float) -> Add:
        assert self.app is not None and self.side is not None
        if self.mailbox is None:
            raise ProtocolError("must open mailbox before adding")
        phase = _string(msg, "phase", "missing 'phase'")
        body = _string(msg, "body", "missing 'body'")
        msg_id = _storable_json(msg.get("id"), "id")
        return Add(self.app, self.side, self.mailbox, phase, body, now, msg_id)

    def _close(self, msg: Frame, now: float) -> Close:
        assert self.app is not None and self.side is not None
        if self.did_close:
            raise ProtocolError("only one close per connection")
        mailbox = _optional_string(msg, "mailbox")
        mood = _optional_string(msg, "mood")
        if mailbox is not None:
            if self.mailbox is not None and mailbox != self.mailbox:
                raise ProtocolError("open and close must use same mailbox")
        else:
            if self.mailbox is None:
                raise ProtocolError("close without mailbox must follow open")
            mailbox = self.mailbox
        return Close(self.app, self.side, mailbox, mood, now, implicit_open=self.mailbox is None)

    # -- store answers -------------------------------------------------------------------------

    def complete(self, op: Op, result: Result, orig: Frame | None = None) -> list[Frame]:
        """Replies once the store has executed `op`; `orig` is echoed in an error."""
        if isinstance(result, Refused):
            return [error_frame(result.error, orig)]
        if isinstance(op, ListNameplates):
            assert isinstance(result, list)
            return [{"type": "nameplates", "nameplates": [{"id": n} for n in result]}]
        if isinstance(op, Allocate):
            assert isinstance(result, str)
            self.did_allocate = True
            return [{"type": "allocated", "nameplate": result}]
        if isinstance(op, Claim):
            assert isinstance(result, str)
            return [{"type": "claimed", "mailbox": result}]
        if isinstance(op, Release):
            self.did_release = True
            return [{"type": "released"}]
        if isinstance(op, Open):
            self.mailbox = op.mailbox
            assert isinstance(result, list)
            return [m.frame() for m in result if isinstance(m, Message)]
        if isinstance(op, Close):
            self.did_close = True
            self.mailbox = None
            return [{"type": "closed"}]
        return []
