// Server-sent events read with fetch, for a stream that needs an
// Authorization header: EventSource cannot send one. FetchEventSource
// behaves as an EventSource does (readyState, onopen, onmessage, onerror,
// close; it reconnects after a network error with Last-Event-ID and gives
// up on an error answer), and it reads the body as it comes, so memory
// stays flat however long the stream runs.

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;
const DEFAULT_RETRY_MS = 3000;

export class FetchEventSource {
  // init() gives the fetch options of each (re)connection, credentials
  // included, or null when there are none to send (the stream then fails as
  // with a 401). refused(sent, detail) hears of a 401 answer to the options
  // sent.
  constructor(url, init, refused = () => {}) {
    this.url = url;
    this.readyState = CONNECTING;
    this.status = 0; // the HTTP status that ended the stream, if one did
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.lastEventId = "";
    this.retryMs = DEFAULT_RETRY_MS;
    this.controller = null;
    this.timer = 0;
    this.init = init;
    this.refused = refused;
    // Connect once the caller has set its handlers, as with EventSource.
    queueMicrotask(() => this.connect());
  }

  close() {
    this.readyState = CLOSED;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
  }

  fire(handler, event) {
    if (typeof this[handler] === "function") this[handler](event);
  }

  // fail ends the stream for good, as EventSource does on an error answer.
  fail(status) {
    this.status = status;
    this.readyState = CLOSED;
    this.fire("onerror", { type: "error", status });
  }

  async connect() {
    if (this.readyState === CLOSED) return;
    const sent = this.init();
    if (!sent) {
      this.fail(401);
      return;
    }
    const headers = new Headers(sent.headers);
    headers.set("Accept", "text/event-stream");
    if (this.lastEventId) headers.set("Last-Event-ID", this.lastEventId);
    this.controller = new AbortController();
    let response;
    try {
      response = await fetch(this.url, { ...sent, headers, cache: "no-store", signal: this.controller.signal });
    } catch {
      this.reconnect();
      return;
    }
    if (this.readyState === CLOSED) return;
    const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
    if (!response.ok || type !== "text/event-stream" || !response.body) {
      if (response.status === 401) {
        const body = await response.json().catch(() => null);
        this.refused(sent, (body && body.detail) || "HTTP 401");
      } else {
        response.body?.cancel().catch(() => {});
      }
      this.fail(response.status);
      return;
    }
    this.readyState = OPEN;
    this.fire("onopen", { type: "open" });
    try {
      await this.read(response.body);
    } catch {
      // The connection broke (or close() aborted it).
    }
    this.reconnect();
  }

  reconnect() {
    if (this.readyState === CLOSED) return;
    this.readyState = CONNECTING;
    this.fire("onerror", { type: "error" });
    this.timer = setTimeout(() => this.connect(), this.retryMs);
  }

  // read parses the event stream as the HTML standard describes it: lines
  // ending in CR, LF or CRLF; a blank line dispatches the event gathered.
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let type = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A CR at the end may be the first half of a CRLF: wait for more.
      const end = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, end).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(end);
      for (const line of lines) {
        if (line === "") {
          if (data.length) {
            const event = { type: type || "message", data: data.join("\n"), lastEventId: this.lastEventId };
            if (event.type === "message" && this.readyState === OPEN) this.fire("onmessage", event);
          }
          data = [];
          type = "";
          continue;
        }
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") type = value;
        else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
        else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
      }
    }
  }
}
