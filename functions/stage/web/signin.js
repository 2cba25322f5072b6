// Who the page acts for, by the service's AUTH_MODE (from GET /config):
//
//   none        nobody signs in; requests go as they are.
//   jupyterhub  the user gives a JupyterHub token, sent as
//               "Authorization: token <t>".
//   oidc        the user signs in at the site's identity provider: the
//               authorization code flow with PKCE (S256) as a public client,
//               the page itself being the redirect URI; the access token is
//               sent as "Authorization: Bearer <t>".
//
// Tokens live in this module's memory only: never in localStorage,
// sessionStorage, cookies or the URL, so reloading the page forgets them.
// Only the code flow's state, nonce and verifier are kept in sessionStorage,
// for the round trip to the provider, and removed as soon as the page is
// back. A 401 answer forgets the token and offers to sign in again.
//
// app.js asks for credentials here (withCredentials, lacking), reports 401
// answers (refused), and hears of changes by the document's "session" event.

import { FetchEventSource } from "./eventstream.js";

const $ = (selector) => document.querySelector(selector);

const FLOW_KEY = "skao-staging-signin"; // sessionStorage, during the round trip only

let mode = "none";
let oidc = null; // {issuer, client_id, scopes}
let token = ""; // the credential, in memory only
let user = ""; // who signed in (AUTH_MODE=oidc)
let discovery = null; // the provider's discovery document, once fetched

let settle;
// ready settles once the page knows who it acts for: the configuration is
// read and a sign-in coming back from the provider is complete.
export const ready = new Promise((resolve) => { settle = resolve; });

export const currentMode = () => mode;
export const currentUser = () => user;

// lacking says what the user must do before the page can call the service
// ("" when nothing): for doing something ("stage data"), or in general.
export function lacking(doing = "") {
  if (mode === "none" || token) return "";
  const what = mode === "oidc" ? "Sign in" : "Enter your JupyterHub token";
  return doing ? `${what} to ${doing}.` : `${what} first.`;
}

// withCredentials returns fetch options carrying the caller's token.
export function withCredentials(options = {}) {
  if (mode === "none" || !token) return options;
  const headers = new Headers(options.headers);
  headers.set("Authorization", `${mode === "oidc" ? "Bearer" : "token"} ${token}`);
  return { ...options, headers };
}

// refused hears that the service answered 401 to a request sent with
// options sent: if it carried the current token, the token is forgotten
// and the user is told why and offered to sign in again.
export function refused(sent, detail) {
  const auth = new Headers(sent && sent.headers).get("Authorization") || "";
  if (!token || !auth.endsWith(` ${token}`)) return;
  token = "";
  user = "";
  if (mode === "jupyterhub") {
    $("#hub-token").value = "";
    tell(`The JupyterHub token was refused (${detail}). Enter a valid token.`, false);
  } else {
    tell(`Your sign-in has ended (${detail}). Sign in again to go on.`, true);
  }
  changed();
}

// focusSignIn takes the user to what signs in.
export function focusSignIn() {
  (mode === "oidc" ? $("#sign-in") : $("#hub-token")).focus();
}

// download has the browser download url in frame (a hidden iframe), so
// the file streams straight to disk: a plain link with AUTH_MODE=none;
// otherwise the link is posted as a form whose body carries the token
// (access_token), since a navigation cannot carry an Authorization header
// and a token in a URL would be written to logs and the browser's history.
export function download(url, frame) {
  if (mode === "none" || !token) {
    frame.src = url;
    return;
  }
  const form = document.createElement("form");
  form.method = "POST";
  form.action = url;
  form.target = frame.name;
  form.hidden = true;
  const field = document.createElement("input");
  field.type = "hidden";
  field.name = "access_token";
  field.value = token;
  form.append(field);
  document.body.append(form);
  form.submit();
  form.remove();
}

// start reads the service's configuration (GET /config's answer, or null
// when it could not be read), shows the matching controls, and completes a
// sign-in coming back from the provider. It settles ready.
export async function start(config) {
  mode = (config && config.auth_mode) || "none";
  oidc = config && config.oidc;
  if (mode === "oidc" && !(oidc && oidc.issuer && oidc.client_id)) {
    tell("The service asks for sign-in but names no identity provider or client for this page (OIDC_CLIENT_ID).", false);
    oidc = null;
  }
  $("#session").hidden = mode === "none";
  $("#signin-oidc").hidden = mode !== "oidc";
  $("#hub-token-form").hidden = mode !== "jupyterhub";
  $("#sign-in").addEventListener("click", signIn);
  $("#sign-in-again").addEventListener("click", signIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#hub-token-form").addEventListener("submit", useHubToken);
  $("#hub-token-forget").addEventListener("click", forgetHubToken);
  try {
    if (mode === "oidc") await comeBack();
    else sessionStorage.removeItem(FLOW_KEY);
  } finally {
    render();
    settle();
  }
}

// ---- showing the session ----

function render() {
  $("#session-user").textContent = user;
  $("#session-who").hidden = !user;
  $("#sign-in").hidden = mode !== "oidc" || !!user || !oidc;
  $("#sign-out").hidden = !user;
  if (mode === "oidc") {
    // The username is the signed-in user's: shown, not typed.
    const username = $("#username");
    username.readOnly = true;
    username.value = user;
    $("#username-hint").textContent = user
      ? "Your username at the identity provider; your area is TARGET_STORAGE_PATH/<username>."
      : "Sign in: your username comes from the identity provider.";
  }
}

// tell shows a message about the session; again offers to sign in again.
function tell(text, again) {
  const box = $("#session-message");
  box.hidden = !text;
  $("#session-message-text").textContent = text;
  $("#sign-in-again").hidden = !again;
}

function progress(text) {
  $("#session-progress").textContent = text;
}

function changed() {
  render();
  document.dispatchEvent(new CustomEvent("session"));
}

// ---- AUTH_MODE=jupyterhub ----

function useHubToken(event) {
  event.preventDefault();
  const value = $("#hub-token").value.trim();
  if (!value) {
    tell("Enter your JupyterHub token (from the hub's Token page).", false);
    $("#hub-token").focus();
    return;
  }
  token = value;
  tell("", false);
  changed();
}

function forgetHubToken() {
  $("#hub-token").value = "";
  token = "";
  tell("", false);
  changed();
}

// ---- AUTH_MODE=oidc ----

function signOut() {
  // Forget the token; the provider's own session is the provider's.
  token = "";
  user = "";
  tell("", false);
  progress("");
  changed();
  $("#sign-in").focus();
}

// redirectURI is the page itself, as registered with the provider.
const redirectURI = () => `${location.origin}${location.pathname}`;

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const randomString = () => base64url(crypto.getRandomValues(new Uint8Array(32)));

// claimsOf reads a JWT's claims. The id_token comes straight from the
// token endpoint over the page's own connection to the provider, so its
// signature is not checked here; the service verifies every access token.
function claimsOf(jwt) {
  const part = (jwt || "").split(".")[1] || "";
  const binary = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
}

// discover fetches the provider's discovery document. The page's policy
// lets it reach the issuer's origin only, so endpoints elsewhere are
// refused with a message rather than by the browser.
async function discover() {
  if (discovery) return discovery;
  const url = `${oidc.issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`its discovery document answered HTTP ${response.status}`);
  const doc = await response.json();
  if (!doc.authorization_endpoint || !doc.token_endpoint) throw new Error("its discovery document names no authorization or token endpoint");
  discovery = doc;
  return doc;
}

function sameOrigin(endpoint, name) {
  if (new URL(endpoint).origin !== new URL(oidc.issuer).origin) {
    throw new Error(`its ${name} endpoint is not on the issuer's origin, which is all the page may reach`);
  }
  return endpoint;
}

// signIn starts the authorization code flow: a fresh state, nonce and
// PKCE verifier, kept for the round trip, and off to the provider's page.
async function signIn() {
  if (!oidc) return;
  tell("", false);
  progress("Signing in…");
  try {
    if (!crypto.subtle) throw new Error("signing in needs the page on https (or on this machine)");
    const doc = await discover();
    const flow = { state: randomString(), nonce: randomString(), verifier: randomString() };
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(flow.verifier));
    sessionStorage.setItem(FLOW_KEY, JSON.stringify(flow));
    const query = new URLSearchParams({
      response_type: "code",
      client_id: oidc.client_id,
      redirect_uri: redirectURI(),
      scope: oidc.scopes || "openid profile",
      state: flow.state,
      nonce: flow.nonce,
      code_challenge: base64url(new Uint8Array(digest)),
      code_challenge_method: "S256",
    });
    location.assign(`${doc.authorization_endpoint}${doc.authorization_endpoint.includes("?") ? "&" : "?"}${query}`);
  } catch (err) {
    progress("");
    tell(`Cannot sign in: the identity provider could not be used (${err.message}).`, true);
  }
}

// comeBack completes a sign-in when the provider sent the browser back
// here with a code (or an error) and the state this page sent.
async function comeBack() {
  const answer = new URLSearchParams(location.search);
  let flow = null;
  try {
    flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) || "null");
  } catch {
    // Not one this page wrote: no sign-in to complete.
  }
  sessionStorage.removeItem(FLOW_KEY);
  if (!answer.has("state") || !(answer.has("code") || answer.has("error"))) return;
  // The code and state leave the address bar (and the history) at once.
  const params = new URLSearchParams(answer);
  for (const name of ["code", "state", "session_state", "iss", "error", "error_description", "error_uri"]) params.delete(name);
  const rest = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  if (!flow || answer.get("state") !== flow.state) {
    tell("The sign-in answer does not belong to a sign-in started here. Sign in again.", true);
    return;
  }
  if (answer.has("error")) {
    tell(`The identity provider did not sign you in: ${answer.get("error_description") || answer.get("error")}.`, true);
    return;
  }
  progress("Signing in…");
  try {
    const doc = await discover();
    const response = await fetch(sameOrigin(doc.token_endpoint, "token"), {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code: answer.get("code"),
        redirect_uri: redirectURI(),
        client_id: oidc.client_id,
        code_verifier: flow.verifier,
      }),
    });
    const tokens = await response.json().catch(() => ({}));
    if (!response.ok || !tokens.access_token) {
      throw new Error(tokens.error_description || tokens.error || `its token endpoint answered HTTP ${response.status}`);
    }
    const name = await usernameOf(doc, tokens, flow);
    token = tokens.access_token;
    user = name;
    tell("", false);
  } catch (err) {
    tell(`Cannot sign in: ${err.message}.`, true);
  } finally {
    progress("");
  }
}

// usernameOf is the signed-in user's preferred_username: from the
// id_token if it has one, else from the provider's userinfo (access tokens
// need not carry it, as INDIGO IAM's do not).
async function usernameOf(doc, tokens, flow) {
  if (tokens.id_token) {
    const claims = claimsOf(tokens.id_token);
    const audiences = [].concat(claims.aud || []);
    if (claims.nonce !== flow.nonce || claims.iss !== oidc.issuer || !audiences.includes(oidc.client_id)) {
      throw new Error("the identity provider's answer is not for this sign-in");
    }
    if (claims.preferred_username) return claims.preferred_username;
  }
  if (!doc.userinfo_endpoint) throw new Error("the identity provider does not say who you are (no preferred_username, no userinfo)");
  const response = await fetch(sameOrigin(doc.userinfo_endpoint, "userinfo"), {
    headers: { Authorization: `Bearer ${tokens.access_token}` },
  });
  if (!response.ok) throw new Error(`the identity provider's userinfo answered HTTP ${response.status}`);
  const info = await response.json();
  if (!info.preferred_username) throw new Error("the identity provider does not say who you are (no preferred_username)");
  return info.preferred_username;
}

// ---- the log stream ----

// eventStream follows server-sent events at url as the caller: an
// EventSource as ever with AUTH_MODE=none, else a stream read with fetch,
// which can carry the token. The stream is opened once the session is
// ready, and behaves as an EventSource meanwhile.
export function eventStream(url) {
  const stream = {
    readyState: 0, status: 0, onopen: null, onmessage: null, onerror: null, inner: null,
    close() {
      this.readyState = 2;
      if (this.inner) this.inner.close();
    },
  };
  ready.then(() => {
    if (stream.readyState === 2) return;
    const inner = mode === "none"
      ? new EventSource(url)
      : new FetchEventSource(url, () => (token ? withCredentials() : null), refused);
    stream.inner = inner;
    const sync = () => {
      stream.readyState = inner.readyState;
      stream.status = inner.status || 0;
    };
    inner.onopen = (event) => { sync(); if (stream.onopen) stream.onopen(event); };
    inner.onmessage = (event) => { sync(); if (stream.onmessage) stream.onmessage(event); };
    inner.onerror = (event) => { sync(); if (stream.onerror) stream.onerror(event); };
  });
  return stream;
}
