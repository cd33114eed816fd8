// A WebSocket that never loses its place: it keeps the cursor of the last message it got and, after any
// disconnect (server restart, laptop lid, flaky Wi-Fi), reconnects with exponential backoff and `?after=`
// so the server replays exactly what was missed. It answers the server's pings and sends commands.

const BASE_DELAY = 500;
const MAX_DELAY = 15000;
const DEAD_AFTER = 50000; // the server pings every 20 s: this much silence means the connection is gone
const COMMAND_TIMEOUT = 10000;

/** A random id for commands; works outside secure contexts too, unlike crypto.randomUUID. */
export function uid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Cursors are `<value>` (after that event) or `<value>.<part>` (after that many of its messages). */
function later(a, b) {
  if (!a) return b;
  if (b.value !== a.value) return b.value > a.value ? b : a;
  if (a.part === 0) return a;
  return b.part === 0 || b.part > a.part ? b : a;
}

export class LiveStream {
  /**
   * @param {string} path `/ws/tasks/<id>` (cursor by task seq) or `/ws/tasks` (cursor by log position)
   * @param {{key: "seq"|"position", onMessage: Function, onState: Function, onOpen?: Function}} hooks
   */
  constructor(path, { key, onMessage, onState, onOpen, token }) {
    Object.assign(this, { path, key, onMessage, onState, onOpen, token });
    this.cursor = null;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.pending = new Map();
    this.lastHeard = 0;
    this.openedAt = 0;
    this.serverOffset = 0; // server clock minus ours, learnt from pings
    setInterval(() => this.watchdog(), 5000);
    addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => document.hidden || this.reconnectNow());
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Now on the server's clock, so "2 min ago" is right even when this machine's clock is off. */
  now() {
    return Date.now() + this.serverOffset;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const c = this.cursor;
    const after = c ? `?after=${c.value}${c.part ? `.${c.part}` : ""}` : "";
    return `${scheme}//${location.host}${this.path}${after}`;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    this.state(this.attempt ? "reconnecting" : "connecting");
    ws.onopen = () => {
      // Browsers cannot set headers on a WebSocket: the token goes in the first frame, never in the URL.
      const token = this.token?.();
      if (token) ws.send(JSON.stringify({ type: "auth", token }));
      // Live once the server answers: a server that wants a token refuses this ping at once.
      ws.send(JSON.stringify({ type: "ping" }));
      this.openedAt = this.lastHeard = Date.now();
    };
    ws.onmessage = (event) => ws === this.ws && this.receive(event.data);
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  receive(raw) {
    this.lastHeard = Date.now();
    if (this.current !== "live") {
      this.state("live");
      this.onOpen?.();
    }
    let m;
    try {
      m = JSON.parse(raw);
    } catch {
      return;
    }
    if (m.type === "ping") {
      if (typeof m.at === "number") this.serverOffset = m.at * 1000 - Date.now();
      this.send({ type: "pong" });
      return;
    }
    if (m.type === "pong") return;
    if ((m.type === "ack" || m.type === "error") && m.id && this.pending.has(m.id)) {
      const { resolve, reject, timer } = this.pending.get(m.id);
      this.pending.delete(m.id);
      clearTimeout(timer);
      m.type === "ack" ? resolve(m) : reject(new CommandError(m.detail, m.code, m.status));
      return;
    }
    const value = m[this.key];
    if (typeof value === "number") {
      const here = { value, part: m.part === m.parts ? 0 : m.part };
      // A resync starts over from where the server says; otherwise never move backwards (snapshots of
      // several tasks arrive in list order, not log order).
      this.cursor = m.type === "resync_required" ? here : later(this.cursor, here);
    }
    this.onMessage(m);
  }

  closed(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    for (const [id, { reject, timer }] of this.pending) {
      clearTimeout(timer);
      reject(new CommandError("The connection dropped before the server answered.", "disconnected", 0));
      this.pending.delete(id);
    }
    const final = { 4401: "unauthorized", 4403: "forbidden", 4404: "gone" }[code];
    if (final) {
      this.stopped = true; // reconnecting cannot help: start() again once something changed
      this.state(final);
      return;
    }
    if (code === 4400) this.cursor = null; // a cursor the server cannot use: start over from a snapshot
    if (Date.now() - this.openedAt > 5000) this.attempt = 0; // it had been up a while: start backoff over
    const delay = Math.min(MAX_DELAY, BASE_DELAY * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.state("reconnecting");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Close a connection that has gone quiet; its close event may take minutes to come on a dead network. */
  watchdog() {
    if (this.ws && this.isOpen && Date.now() - this.lastHeard > DEAD_AFTER) {
      const ws = this.ws;
      ws.close();
      this.closed(ws, 1006);
    }
  }

  /** Start from this cursor value when there is none yet (the list page's tasks were read over HTTP). */
  seed(value) {
    if (!this.cursor && value > 0) this.cursor = { value, part: 0 };
  }

  /** Connect afresh (say, with a token now), from the same cursor, whatever state the socket is in. */
  restart() {
    const ws = this.ws;
    this.ws = null; // its close event, if any comes, is then ignored
    ws?.close();
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  /** Back online or back in view: do not sit out the rest of a long backoff. */
  reconnectNow() {
    if (this.timer && !this.stopped) this.connect();
  }

  send(frame) {
    if (this.isOpen) this.ws.send(JSON.stringify(frame));
  }

  /** Send a command over the socket; resolves with the ack, rejects with the server's error. */
  command(frame) {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(new CommandError("Not connected.", "disconnected", 0));
        return;
      }
      const id = uid();
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CommandError("The server did not answer in time.", "timeout", 0));
      }, COMMAND_TIMEOUT);
      this.pending.set(id, { resolve, reject, timer });
      this.send({ ...frame, id });
    });
  }

  state(name) {
    this.current = name;
    this.onState(name, this);
  }
}

export class CommandError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}
