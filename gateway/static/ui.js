// What both pages share: building DOM from text, talking to the API (with a token when the server wants
// one), toasts, the connection pill and desktop notifications. Server text only ever goes in as text.

import { CommandError, uid } from "./live.js";

export const $ = (id) => document.getElementById(id);
export const TICKS = new Set(["progress", "substep_done", "log"]); // everything else is a transition

/** A DOM element with text children only: el("li", {class: "x", title: "y"}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child); // strings become text nodes
  return node;
}

/** A status symbol. Symbols are decoration (the words next to them say the same), so screen readers skip them. */
export function glyph(symbol) {
  return el("span", { class: "glyph", "data-glyph": symbol, "aria-hidden": "true" }, symbol);
}

export function setBar(bar, percent, text) {
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-valuetext", text ?? `${percent}%`);
  bar.querySelector(".fill").style.width = `${percent}%`; // CSSOM, which a strict CSP allows
}

export function miniBar(percent, label) {
  const bar = el(
    "span",
    { class: "bar mini", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
    el("span", { class: "fill" }),
  );
  setBar(bar, percent);
  return bar;
}

// ---- talking to the server -----------------------------------------------------------------------------

// With API tokens configured, the page asks for one once and keeps it in this browser (local mode needs none).
const TOKEN_KEY = "progressd-token";
export const token = () => localStorage.getItem(TOKEN_KEY);
export const streams = new Set(); // started again with the token once there is one

export function askForToken() {
  const dialog = $("signin");
  if (!dialog.open) dialog.showModal();
}

export function setupSignIn() {
  const dialog = $("signin");
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    localStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    dialog.close();
    $("signout").hidden = false;
    for (const stream of streams) stream.restart();
  });
  // Without a token, find out at once whether the server wants one (a stream would wait a few seconds).
  if (!token()) api("/api/tasks?limit=1").catch(() => {});
  const signout = $("signout");
  signout.hidden = !token();
  signout.addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  // A fresh key per click: if the answer is lost and the request is retried, it still applies once.
  if (method !== "GET") headers["idempotency-key"] = `page:${uid()}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new CommandError("Could not reach the server.", "network", 0);
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401) askForToken();
  if (!response.ok) throw new CommandError(data?.detail ?? `HTTP ${response.status}`, data?.type, response.status);
  return data;
}

let toastTimer = null;
export function toast(text, kind = "error") {
  const box = $("toast");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 6000);
}

/**
 * Ignore a button while its command runs; show the server's refusal if there is one. aria-disabled, not
 * disabled: a disabled button drops the keyboard focus.
 */
export async function run(button, action) {
  if (button.getAttribute("aria-disabled") === "true") return;
  button.setAttribute("aria-disabled", "true");
  try {
    await action();
  } catch (error) {
    toast(error instanceof CommandError ? error.message : String(error));
  } finally {
    button.removeAttribute("aria-disabled");
  }
}

export function showConnection(state, stream) {
  const conn = $("conn");
  conn.dataset.state = state;
  if (state === "reconnecting") {
    const wait = Math.ceil(((stream.retryAt ?? 0) - Date.now()) / 1000);
    conn.textContent = wait > 0 ? `Reconnecting… (retry in ${wait} s)` : "Reconnecting…";
  } else {
    conn.textContent =
      {
        live: "Live",
        connecting: "Connecting…",
        gone: "Not found",
        unauthorized: "Sign-in needed",
        forbidden: "Refused by the server",
      }[state] ?? state;
    if (state === "unauthorized") askForToken();
  }
  document.body.dataset.conn = state;
}

// ---- notifications ---------------------------------------------------------------------------------------

export function setupNotifications() {
  const button = $("notify");
  if (!("Notification" in window)) return;
  const show = () => (button.hidden = Notification.permission !== "default");
  show();
  button.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    show();
    if (answer !== "granted") {
      toast("Notifications are blocked for this site.", "info");
      return;
    }
    const push = await enablePush();
    toast(
      push === true
        ? "Notifications are on, also while no progressd page is open."
        : `Notifications are on while a progressd page is open. ${push}`,
      "info",
    );
  });
  if (Notification.permission === "granted") enablePush(); // keeps the server's copy of the subscription
}

// Set once this browser has a push subscription the server knows: the service worker shows the notices
// then, and the page does not show them a second time.
let pushActive = false;

function sameBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/**
 * Register the service worker, subscribe this browser to Web Push with the server's VAPID key and send the
 * subscription to the server. True when done; else why not, as a sentence (the page's own notifications
 * still work while it is open).
 */
export async function enablePush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !window.isSecureContext) {
    return "This browser cannot receive push messages here (it needs HTTPS or localhost).";
  }
  try {
    const registration = await navigator.serviceWorker.register("/sw.js");
    await navigator.serviceWorker.ready;
    const { vapid_public_key: key } = await api("/api/push-subscriptions");
    const serverKey = keyBytes(key);
    let subscription = await registration.pushManager.getSubscription();
    const madeFor = subscription?.options?.applicationServerKey;
    if (subscription && madeFor && !sameBytes(new Uint8Array(madeFor), serverKey)) {
      // Made for another key (a reset server, say): push services would refuse what this server signs.
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: serverKey,
      });
    }
    await api("/api/push-subscriptions", { method: "POST", body: subscription.toJSON() });
    pushActive = true;
    document.body.dataset.push = "on";
    return true;
  } catch (error) {
    document.body.dataset.push = "off";
    return `Push messages could not be set up: ${error instanceof Error ? error.message : error}`;
  }
}

/** A desktop notification for the moments the spec names, whether or not this tab is in view. */
export function notifyFor(m, view) {
  if (pushActive || !view || !("Notification" in window) || Notification.permission !== "granted") return;
  let title;
  let body = view.title;
  switch (m.type) {
    case "step_started":
      if (m.part !== 1 || view.started_at !== m.at) return; // only the event that started the task
      title = `Your ${view.title} task has started`;
      body = `Step ${m.step}: ${m.name}`;
      break;
    case "step_complete":
      title = `Step ${m.step} complete: ${m.name}`;
      break;
    case "approval_needed":
      title = `⚠️ Approval required for Step ${m.approval.step}`;
      body = m.approval.message;
      break;
    case "task_complete":
      title = `✅ Your ${view.title} is ready!`;
      body = m.result ?? view.title;
      break;
    case "task_failed":
      title = m.step ? `❌ Task failed at Step ${m.step}` : "❌ Task failed";
      body = m.error ?? view.title;
      break;
    default:
      return;
  }
  // One tag per task and kind: a newer notice replaces an older one, and two open tabs do not double up.
  const note = new Notification(title, { body, tag: `${m.task_id}:${m.type}`, icon: "/static/favicon.svg" });
  note.onclick = () => {
    window.focus();
    if (location.pathname !== `/tasks/${m.task_id}`) location.assign(`/tasks/${m.task_id}`);
  };
}
