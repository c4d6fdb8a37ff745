// Web clients of the mailbox (JSON over a WebSocket) and of the relay's WebSocket side (the
// handshake, then bytes, all in binary messages), as a browser app speaks them. Each function
// resolves with what it saw, or rejects with the reason, within `TIMEOUT_MS`.
"use strict";

const TIMEOUT_MS = 20000;

function within(promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${TIMEOUT_MS} ms`)),
                       TIMEOUT_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// One WebSocket whose messages are queued and taken in order.
class Socket {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.queue = [];
    this.waiting = [];
    this.closed = new Promise((resolve) => this.ws.addEventListener("close", resolve));
    this.ws.addEventListener("message", (event) => this.push(event.data));
    this.ws.addEventListener("close", (event) => this.push(event));
  }

  opened() {
    return within(new Promise((resolve, reject) => {
      this.ws.addEventListener("open", resolve);
      this.ws.addEventListener("error", () => reject(new Error(`cannot open ${this.ws.url}`)));
    }), `open ${this.ws.url}`);
  }

  push(item) {
    const waiter = this.waiting.shift();
    if (waiter) waiter(item); else this.queue.push(item);
  }

  async take() {
    const item = this.queue.length ? this.queue.shift()
      : await within(new Promise((resolve) => this.waiting.push(resolve)), this.ws.url);
    if (item instanceof CloseEvent) throw new Error(`closed ${item.code} ${item.reason}`);
    return item;
  }
}

// -- mailbox --------------------------------------------------------------------------------

class MailboxClient extends Socket {
  async next(type) {  // the next message of this type (acks and others skipped)
    for (;;) {
      const message = JSON.parse(await this.take());
      if (message.type === "error") throw new Error(`error: ${message.error}`);
      if (message.type === type) return message;
    }
  }

  send(message) { this.ws.send(JSON.stringify(message)); }

  async command(message, answer) {
    this.send(message);
    return answer ? this.next(answer) : null;
  }
}

// Two clients through one mailbox: bind, allocate, claim, open, add, read the peer's
// message, close; resolves with what each saw.
async function mailboxExchange(url) {
  const a = new MailboxClient(url), b = new MailboxClient(url);
  await Promise.all([a.opened(), b.opened()]);
  const welcome = (await a.next("welcome")).welcome;
  await b.next("welcome");
  const version = ["wormhole-stack-browser-test", "1"];
  a.send({type: "bind", appid: "browser-test", side: "aaaa", client_version: version});
  const nameplate = (await a.command({type: "allocate"}, "allocated")).nameplate;
  const mailbox = (await a.command({type: "claim", nameplate}, "claimed")).mailbox;
  a.send({type: "open", mailbox});
  a.send({type: "add", phase: "pake", body: "aa01"});
  await a.next("message");  // its own, echoed
  b.send({type: "bind", appid: "browser-test", side: "bbbb", client_version: version});
  const claimed = (await b.command({type: "claim", nameplate}, "claimed")).mailbox;
  b.send({type: "open", mailbox: claimed});
  const bGot = await b.next("message");
  b.send({type: "add", phase: "pake", body: "bb02"});
  const aGot = await a.next("message");
  a.send({type: "release", nameplate});
  await a.next("released");
  const closed = await Promise.all([a, b].map(
    (c) => c.command({type: "close", mailbox, mood: "happy"}, "closed")));
  a.ws.close(); b.ws.close();
  return {welcome, nameplate, mailbox, claimed, closed: closed.map((m) => m.type),
          aGot: [aGot.side, aGot.phase, aGot.body], bGot: [bGot.side, bGot.phase, bGot.body]};
}

// -- relay ----------------------------------------------------------------------------------

// The test data: a byte stream both sides (and the Python side) can generate and check.
function pattern(seed, length) {
  const bytes = new Uint8Array(length);
  let x = seed >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

const CHUNK = 65536;

// One side of a relay pairing: the handshake, then `size` bytes of `pattern(sendSeed)` sent
// while `size` bytes are received and checked against `pattern(expectSeed)`.
async function relaySide(url, token, side, sendSeed, expectSeed, size) {
  const socket = new Socket(url);
  await socket.opened();
  socket.ws.send(new TextEncoder().encode(`please relay ${token} for side ${side}\n`));
  const ok = new TextDecoder().decode(await socket.take());
  if (ok !== "ok\n") throw new Error(`handshake answered ${JSON.stringify(ok)}`);
  const data = pattern(sendSeed, size);
  for (let at = 0; at < size; at += CHUNK) socket.ws.send(data.subarray(at, at + CHUNK));
  const expected = pattern(expectSeed, size);
  let received = 0, messages = 0;
  while (received < size) {
    const chunk = await socket.take();
    if (!(chunk instanceof ArrayBuffer)) throw new Error("a text message from the relay");
    const bytes = new Uint8Array(chunk);
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== expected[received + i]) throw new Error(`byte ${received + i} differs`);
    }
    received += bytes.length;
    messages += 1;
  }
  socket.ws.close(1000);  // after what was sent: the relay passes it all on, then closes
  await within(socket.closed, "close");
  return {received, messages};
}

// Two browser WebSockets paired through the relay, each sending `size` bytes to the other.
async function relayPair(urlA, urlB, token, size) {
  return Promise.all([relaySide(urlA, token, "aaaaaaaaaaaaaaaa", 1, 2, size),
                      relaySide(urlB, token, "bbbbbbbbbbbbbbbb", 2, 1, size)]);
}
