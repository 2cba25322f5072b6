// The staging page: a form for POST /stage_data, a browser of the source
// storage (GET /browse), the user's history (GET /operations, polled) and a
// log viewer following the logs function (GET /logs?follow=true). Plain DOM,
// no framework; every text from the service is set with textContent. Who
// the page acts for (signing in, tokens) is signin.js's.

import * as session from "./signin.js";

const $ = (selector) => document.querySelector(selector);

const form = $("#stage-form");
const methodSelect = $("#method");
const usernameInput = $("#username");
const sourceInput = $("#source");
const targetInput = $("#target");
const tokenInput = $("#jupyter-token");
const asyncInput = $("#async");
const result = $("#result");

const USERNAME = /^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}$/;
const HISTORY_REFRESH_MS = 1000;
const MAX_LOG_LINES = 500;
const LOG_BACKLOG = 200; // records the viewer starts with
const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"];

// call fetches url as the caller (with their token, signin.js) and returns
// {status, ok, body}: body is the decoded JSON answer, or null when the
// answer is not JSON. Calls wait until the page knows who it acts for (a
// sign-in coming back from the identity provider completes first), except
// the first read of /config, which says how to sign in. A call that needs
// credentials the page does not have is not sent: its answer is a 401
// saying what to do. A 401 answer ends the session.
async function call(url, options = {}) {
  if (url !== "/config") {
    await session.ready;
    const lacking = session.lacking();
    if (lacking) return { status: 401, ok: false, body: { detail: lacking }, headers: new Headers() };
  }
  const sent = session.withCredentials(options);
  const response = await fetch(url, sent);
  let body = null;
  if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
    body = await response.json().catch(() => null);
  }
  const answer = { status: response.status, ok: response.ok, body, headers: response.headers };
  if (response.status === 401) session.refused(sent, detailOf(answer));
  return answer;
}

// detailOf is what an error answer says, or its status when it says nothing.
function detailOf(answer) {
  return (answer.body && answer.body.detail) || `The service answered HTTP ${answer.status}`;
}

// visible is text from the service as it is spelled: line breaks, other
// control characters and the invisible marks that reorder text (U+202E
// RIGHT-TO-LEFT OVERRIDE shows "rtl\u202egnp.exe" as "rtlexe.png", and
// turns the rest of its line around) are written as escapes, as the log
// writes them, so a name can neither pass for another nor garble its row.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const ESCAPES = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
function visible(text) {
  return String(text).replace(INVISIBLE, (c) => ESCAPES[c] || `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function show(box, kind, text) {
  box.className = `message ${kind}`;
  box.textContent = visible(text);
}

// labelCells names each cell after its column header, so a narrow screen
// can show a row as a card of labelled values.
function labelCells(table, row) {
  const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  [...row.children].forEach((td, i) => { td.dataset.label = headers[i] || ""; });
  return row;
}

// el makes an element; its text and title are shown visible.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  if ("textContent" in props) node.textContent = visible(props.textContent);
  if ("title" in props) node.title = visible(props.title);
  for (const child of children) node.append(child);
  return node;
}

function formatBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  const i = Math.min(Math.floor(Math.log(n) / Math.log(1024)), units.length - 1);
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatTime(value) {
  if (!value) return "";
  const d = new Date(value);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const baseName = (p) => p.replace(/\/+$/, "").split("/").pop();

// ---- staging form ----

// sourceRoot is SOURCE_STORAGE_PATH, so the history can show paths under
// it as the browser does, relative to it.
let sourceRoot = "";

// methods are the service's methods by name, with the traits it declares
// (streams, needs_target, jupyter_token): the page knows no method itself.
const methods = new Map();

async function loadConfig() {
  let config = null;
  try {
    const answer = await call("/config");
    if (!answer.ok) throw new Error(detailOf(answer));
    config = answer.body;
    // Only an administrator is told the storage's root.
    sourceRoot = (answer.body.source_storage_path || "").replace(/\/+$/, "");
    const saved = localStorage.getItem("method");
    for (const m of answer.body.methods) {
      methods.set(m.name, m);
      methodSelect.append(el("option", { value: m.name, textContent: m.name, selected: m.name === saved }));
    }
  } catch (err) {
    show(result, "error", `Cannot load the configuration: ${err.message}`);
  }
  methodChanged();
  await session.start(config);
  if (session.currentUser()) await loadSourceRoot(); // signed in just now
}

// loadSourceRoot reads /config again as the caller: an administrator is
// told the storage's root.
async function loadSourceRoot() {
  try {
    const answer = await call("/config");
    if (answer.ok) sourceRoot = (answer.body.source_storage_path || "").replace(/\/+$/, "");
  } catch {
    // The history shows paths as the records hold them.
  }
}

// traits of the chosen method.
const chosen = () => methods.get(methodSelect.value) || {};

// methodChanged shows the token for methods that take one, the target for
// methods that write somewhere, and downloads instead of staging for
// methods whose answer is the content.
function methodChanged() {
  const m = chosen();
  $("#token-field").hidden = !m.jupyter_token;
  $("#target-field").hidden = !m.needs_target;
  asyncInput.disabled = !!m.streams;
  $("#submit").textContent = m.streams ? "Download" : "Stage";
}

function missingField() {
  if (!usernameInput.value.trim()) return [usernameInput, "Enter a username."];
  if (!USERNAME.test(usernameInput.value.trim())) return [usernameInput, "The username may hold letters, digits and . _ @ + - (starting with a letter, digit or _)."];
  if (!sourceInput.value.trim()) return [sourceInput, "Enter a source path or pick one in the source storage."];
  if (chosen().needs_target && !targetInput.value.trim()) return [targetInput, "Enter a target path in your user area."];
  return null;
}

async function submitStage(event) {
  event.preventDefault();
  const signIn = session.lacking(chosen().streams ? "download data" : "stage data");
  if (signIn) {
    show(result, "error", signIn);
    session.focusSignIn();
    return;
  }
  const missing = missingField();
  if (missing) {
    show(result, "error", missing[1]);
    missing[0].setAttribute("aria-invalid", "true");
    missing[0].focus();
    return;
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const method = methodSelect.value;
  const username = usernameInput.value.trim();
  localStorage.setItem("username", username);
  localStorage.setItem("method", method);
  if (chosen().streams) {
    startDownload(method, username, sourcePath());
    return;
  }
  const query = new URLSearchParams({ method, username });
  const headers = { "Content-Type": "application/json" };
  if (asyncInput.checked) headers.Prefer = "respond-async";
  const data = { local_path_on_storage: sourcePath(), relative_path: targetInput.value.trim() };
  // In the body, never in the URL, where proxies' access logs would keep it.
  if (chosen().jupyter_token && tokenInput.value) data.jupyter_token = tokenInput.value;
  const button = $("#submit");
  button.disabled = true;
  show(result, "info", `Staging ${data.local_path_on_storage} with ${method}…`);
  refreshHistory();
  try {
    const answer = await call(`/stage_data?${query}`, { method: "POST", headers, body: JSON.stringify({ data }) });
    if (answer.status === 202) {
      show(result, "info", `Accepted: operation ${answer.body.id} runs in the background; follow it in the history.`);
    } else if (answer.ok && answer.body) {
      show(result, "success", answer.body.message);
    } else {
      show(result, "error", detailOf(answer));
    }
  } catch (err) {
    show(result, "error", `The service could not be reached: ${err.message}`);
  } finally {
    button.disabled = false;
    refreshHistory();
  }
}

// startDownload lets the browser fetch the download link in a hidden frame
// (posted with the token when there is one, signin.js): a file streams
// straight to the user's disk (nothing held in the page's memory), while an
// error answer, which is JSON and no attachment, loads into the frame,
// where its detail is read and shown.
function startDownload(method, username, source) {
  const query = new URLSearchParams({ method, username, local_path_on_storage: source });
  const old = $("#download-frame");
  const frame = el("iframe", { id: "download-frame", name: "download-frame", title: "Download", hidden: true });
  old.replaceWith(frame);
  frame.addEventListener("load", () => {
    const text = frame.contentDocument && frame.contentDocument.body ? frame.contentDocument.body.textContent : "";
    let detail = text;
    try { detail = JSON.parse(text).detail || text; } catch { /* not JSON */ }
    show(result, "error", detail || "The download failed");
    refreshHistory();
  });
  session.download(`/stage_data?${query}`, frame);
  show(result, "success", `Download of ${baseName(source)} started: your browser saves it.`);
  setTimeout(refreshHistory, 500);
}

// ---- source storage browser ----

let browsePath = "";

async function browse(path) {
  const error = $("#browse-error");
  try {
    const answer = await call(`/browse?${new URLSearchParams({ path })}`);
    if (!answer.ok) {
      error.hidden = false;
      error.textContent = visible(detailOf(answer));
      return false;
    }
    error.hidden = true;
    renderListing(answer.body);
    return true;
  } catch (err) {
    error.hidden = false;
    error.textContent = `The service could not be reached: ${err.message}`;
    return false;
  }
}

function renderListing(listing) {
  browsePath = listing.path;
  $("#browse-path").textContent = visible(`/${listing.path}`);
  $("#browse-up").disabled = listing.path === "";
  $("#browse-truncated").hidden = !listing.truncated;
  const rows = listing.entries.map((e) => {
    const path = listing.path ? `${listing.path}/${e.name}` : e.name;
    const name = e.type === "directory"
      ? el("button", { type: "button", className: "link-button entry-dir", textContent: `${e.name}/`,
          title: `Open ${path}`, onclick: () => browse(path) })
      : el("span", { textContent: e.name });
    const use = el("button", { type: "button", textContent: "Use", title: `Use ${path} as the source`,
      onclick: () => useSource(path) });
    use.setAttribute("aria-label", visible(`Use ${path} as the source`));
    const row = el("tr", {},
      el("td", { className: "path" }, name),
      el("td", { className: "num", textContent: e.type === "directory" ? "" : formatBytes(e.size), title: `${e.size} bytes` }),
      el("td", { className: "time", textContent: formatTime(e.modified) }),
      el("td", {}, use));
    row.dataset.path = path;
    row.dataset.type = e.type;
    return labelCells($("#browse-table"), row);
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 4, textContent: "This folder is empty." })));
  $("#browse-table tbody").replaceChildren(...rows);
}

// picked is the source last picked with Use, with what the source field
// made of it: a field drops line breaks and the form trims spaces, so a
// name holding them is staged by the listing's exact path while the field
// still shows it.
let picked = { path: "", shown: "" };

function sourcePath() {
  return picked.path && sourceInput.value === picked.shown ? picked.path : sourceInput.value.trim();
}

function useSource(path) {
  sourceInput.value = path;
  picked = { path, shown: sourceInput.value };
  if (!targetInput.value) targetInput.value = baseName(path);
  sourceInput.focus();
}

function parentOf(path) {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

// ---- history ----

let historyTimer = 0;
// The history is polled with the ETag of the last answer: while nothing
// changed the service answers 304 with no body and the table stays as it is.
let historyQuery = "";
let historyETag = "";

async function refreshHistory() {
  clearTimeout(historyTimer);
  const username = usernameInput.value.trim();
  const query = new URLSearchParams({ limit: "50" });
  if (USERNAME.test(username)) query.set("username", username);
  $("#history-scope").textContent = query.has("username")
    ? `Newest operations of ${username}, refreshed every second.`
    : "Newest operations of all users, refreshed every second; enter a username to see yours.";
  const error = $("#history-error");
  if (document.hidden) {
    // Nobody looks: ask again once the page is shown (visibilitychange).
    return;
  }
  if (String(query) !== historyQuery) {
    historyQuery = String(query);
    historyETag = "";
  }
  try {
    const headers = historyETag ? { "If-None-Match": historyETag } : {};
    const answer = await call(`/operations?${query}`, { headers, cache: "no-store" });
    if (answer.status !== 304) {
      if (answer.status === 401) $("#history-table tbody").replaceChildren(); // nobody's history to show
      if (!answer.ok || !answer.body) throw new Error(detailOf(answer));
      renderHistory(answer.body.operations);
      historyETag = answer.headers.get("ETag") || "";
    }
    error.hidden = true;
  } catch (err) {
    historyETag = "";
    error.hidden = false;
    error.textContent = visible(`Cannot load the history: ${err.message}`);
  }
  historyTimer = setTimeout(refreshHistory, HISTORY_REFRESH_MS);
}

function progressCell(op) {
  const cell = el("td", { className: "num" });
  if (op.bytes <= 0 && op.status === "running") {
    // A folder's size is known once it is copied: show what has moved.
    cell.textContent = `${formatBytes(op.bytes_done || 0)} so far`;
  } else if (op.bytes > 0) {
    const done = op.status === "success" ? op.bytes : op.bytes_done;
    const percent = op.bytes > 0 ? Math.floor((100 * done) / op.bytes) : 0;
    const bar = el("progress", { max: op.bytes || 1, value: done });
    bar.setAttribute("aria-label", `Progress of ${op.id}`);
    cell.append(bar, " ", el("span", { className: "percent", textContent: `${percent}%` }));
  }
  return cell;
}

function renderHistory(operations) {
  const rows = operations.map((op) => {
    const status = el("td", {}, el("span", { className: `status status-${op.status}`, textContent: op.status }));
    if (op.error_reason) status.append(el("div", { className: "error-reason", textContent: op.error_reason }));
    else if (op.message) status.title = op.message;
    let source = sourceRoot && op.local_path_on_storage.startsWith(`${sourceRoot}/`)
      ? op.local_path_on_storage.slice(sourceRoot.length + 1) : op.local_path_on_storage;
    // A request by Rucio DID shows the DID, and while it waits, that it waits for the replica.
    if (op.did) source = op.status === "pending" && !source ? `${op.did} (waiting for the replica)` : `${op.did} ${source ? `(${source})` : ""}`.trim();
    const paths = op.relative_path ? `${source} → ${op.relative_path}` : source;
    const row = el("tr", {},
      el("td", { className: "time", textContent: formatTime(op.created_at) }),
      el("td", { textContent: op.method }),
      el("td", { className: "path", textContent: paths, title: op.local_path_on_storage }),
      status,
      progressCell(op),
      el("td", { className: "num", textContent: formatBytes(op.bytes), title: `${op.bytes} bytes` }),
      el("td", { className: "time", textContent: formatTime(op.finished_at) }));
    row.dataset.id = op.id;
    row.dataset.status = op.status;
    return labelCells($("#history-table"), row);
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, textContent: "No operations yet." })));
  $("#history-table tbody").replaceChildren(...rows);
}

// ---- log viewer ----

const logList = $("#log-lines");
const logState = $("#log-state");
let logSource = null;
let logPaused = false;
let logPending = [];
let lastLogId = -1;
let logRetry = 0;

// levelOf reads the level of a text line "<time> - <LEVEL> - <message> k=v…".
function levelOf(line) {
  const m = / - (DEBUG|INFO|WARNING|ERROR) - /.exec(line);
  return m ? m[1] : "INFO";
}

// logLine turns one event's data into a text line: the logs function sends
// text lines, or JSON records with ?format=json.
function logLine(data) {
  if (!data.startsWith("{")) return data;
  try {
    const r = JSON.parse(data);
    const attrs = Object.entries(r.attributes || {}).map(([k, v]) => ` ${k}=${v}`).join("");
    return `${r.time} - ${r.level} - ${r.message}${attrs}`;
  } catch {
    return data;
  }
}

function wantedLevel() {
  return LEVELS.indexOf($("#log-level").value);
}

function appendLogLines(lines) {
  const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 40;
  for (const line of lines) {
    const level = levelOf(line);
    const item = el("li", { className: `level-${level}`, textContent: line });
    item.dataset.level = level;
    item.hidden = LEVELS.indexOf(level) < wantedLevel(); // the stream filters too; this keeps the view exact
    logList.append(item);
  }
  while (logList.children.length > MAX_LOG_LINES) logList.firstElementChild.remove();
  if (atBottom) logList.scrollTop = logList.scrollHeight;
}

function followLogs() {
  clearTimeout(logRetry);
  if (logSource) logSource.close();
  const level = $("#log-level").value;
  logState.textContent = "connecting…";
  const query = new URLSearchParams({ follow: "true", level, limit: String(LOG_BACKLOG) });
  const source = session.eventStream(`/logs?${query}`);
  logSource = source;
  source.onopen = () => { logState.textContent = "following"; };
  source.onmessage = (event) => {
    // A reconnect may repeat records the viewer already shows.
    const id = Number(event.lastEventId);
    if (event.lastEventId !== "" && Number.isFinite(id)) {
      if (id <= lastLogId) return;
      lastLogId = id;
    }
    const lines = event.data.split("\n").filter(Boolean).map(logLine);
    if (logPaused) logPending.push(...lines);
    else appendLogLines(lines);
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && source.status === 401) {
      logState.textContent = session.lacking("follow the log") || "the log service refused the token";
    } else if (source.readyState === EventSource.CLOSED) {
      logState.textContent = "the log service is not reachable; trying again in 5 s";
      logRetry = setTimeout(followLogs, 5000);
    } else {
      logState.textContent = "reconnecting…";
    }
  };
}

// levelChanged reloads the log at the new level: the logs function filters
// by level, and its stream starts with the newest records.
function levelChanged() {
  logList.replaceChildren();
  logPending = [];
  lastLogId = -1;
  followLogs();
}

function togglePause() {
  logPaused = !logPaused;
  const button = $("#log-pause");
  button.textContent = logPaused ? "Resume" : "Pause";
  button.setAttribute("aria-pressed", String(logPaused));
  if (!logPaused) {
    appendLogLines(logPending);
    logPending = [];
  }
}

// ---- file creator (ENABLE_FILE_CREATOR=true) ----

async function createFile(event) {
  event.preventDefault();
  const box = $("#creator-result");
  const filename = $("#creator-name").value.trim();
  if (!filename) {
    show(box, "error", "Enter a file name.");
    $("#creator-name").focus();
    return;
  }
  try {
    const answer = await call("/create-file", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ filename, content: $("#creator-content").value }),
    });
    if (answer.ok && answer.body) show(box, "success", answer.body.message);
    else show(box, "error", detailOf(answer));
  } catch (err) {
    show(box, "error", `The service could not be reached: ${err.message}`);
  }
  browse(browsePath);
}

// ---- signing in and out ----

// sessionChanged shows the service as the new caller sees it: signing out
// (or a token refused) clears what the last one saw; the storage's root is
// read again (an administrator is told it), and the browser, the history
// and the log are loaded anew.
function sessionChanged() {
  if (session.lacking()) {
    $("#browse-table tbody").replaceChildren();
    $("#history-table tbody").replaceChildren();
  }
  loadSourceRoot();
  browse(browsePath);
  refreshHistory();
  levelChanged();
}

// ---- start ----

usernameInput.value = localStorage.getItem("username") || "";
methodSelect.addEventListener("change", methodChanged);
usernameInput.addEventListener("change", refreshHistory);
form.addEventListener("submit", submitStage);
$("#browse-up").addEventListener("click", () => browse(parentOf(browsePath)));
$("#browse-here").addEventListener("click", async () => {
  const wanted = sourceInput.value.trim();
  // Open the folder the source is in (or the source itself if it is one).
  if (!wanted || !(await browse(wanted))) await browse(parentOf(wanted));
  const first = $("#browse-table tbody button");
  (first || $("#browse-up")).focus();
});
$("#log-level").addEventListener("change", levelChanged);
$("#log-pause").addEventListener("click", togglePause);
$("#log-clear").addEventListener("click", () => logList.replaceChildren());
if (document.body.dataset.fileCreator === "true") {
  $("#creator").hidden = false;
  $("#creator-form").addEventListener("submit", createFile);
}
document.addEventListener("session", sessionChanged);
document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshHistory(); });

loadConfig().then(refreshHistory);
browse("");
followLogs();
