// Live order updates: an EventSource opened with a single-use ticket (EventSource cannot
// send the Authorization header). Tickets are good once, so when the stream drops the
// browser's own retry would be refused: we reconnect ourselves with a fresh ticket and
// `since` = the last event seen, and the server replays what was missed.

import { post } from "./api.js";

const KINDS = ["status_changed", "payment_changed", "stalled", "resumed"];

export class LiveFeed {
  /// Follows `path` (e.g. /api/orders/stream); `onUpdate(update)` gets each event's data,
  /// `onState("live" | "connecting" | "offline" | "revoked")` the connection's state.
  constructor(path, onUpdate, onState = () => {}) {
    this.path = path;
    this.onUpdate = onUpdate;
    this.onState = onState;
    this.lastId = null;
    this.closed = false;
    this.failures = 0;
    this.connect();
  }

  async connect() {
    if (this.closed) return;
    this.onState("connecting");
    let ticket;
    try {
      ticket = (await post("/api/auth/stream-ticket")).ticket;
    } catch {
      return this.retry();
    }
    if (this.closed) return;
    const query = new URLSearchParams({ ticket });
    if (this.lastId !== null) query.set("since", this.lastId);
    const separator = this.path.includes("?") ? "&" : "?";
    const source = new EventSource(`${this.path}${separator}${query}`);
    this.source = source;
    source.addEventListener("ready", (event) => {
      this.failures = 0;
      if (this.lastId === null) this.lastId = Number(event.lastEventId);
      this.onState("live");
    });
    for (const kind of KINDS) {
      source.addEventListener(kind, (event) => {
        this.lastId = Number(event.lastEventId);
        this.onUpdate(JSON.parse(event.data));
      });
    }
    // `lagged`, a lost connection or a server shutting down all end here.
    const reconnect = () => {
      source.close();
      if (this.source === source) this.retry();
    };
    source.addEventListener("lagged", reconnect);
    // The account may no longer watch: reconnecting would only be refused.
    source.addEventListener("revoked", () => {
      source.close();
      this.onState("revoked");
    });
    source.onerror = reconnect;
  }

  retry() {
    if (this.closed) return;
    this.source = null;
    this.onState("offline");
    this.failures += 1;
    const wait = Math.min(500 * 2 ** this.failures, 10000);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}
