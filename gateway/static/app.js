// The progress pages: `/` lists your tasks, `/tasks/<id>` is one task's progress box. Both follow a
// WebSocket (live.js) and keep the server's progress JSON up to date with its messages (model.js).
// Server text only ever goes into the page through textContent.

import { CommandError, LiveStream, uid } from "./live.js";
import {
  STEP_SYMBOL,
  ago,
  apply,
  clock,
  currentLine,
  duration,
  etaText,
  isAtLeastAsNew,
  isFinished,
  liveWorkMs,
  stepState,
  stepWord,
  taskState,
  taskSymbol,
  taskWord,
  when,
} from "./model.js";

const $ = (id) => document.getElementById(id);
const TICKS = new Set(["progress", "substep_done", "log"]); // everything else is a transition
const MAX_LOG_LINES = 400;

/** A DOM element with text children only: el("li", {class: "x", title: "y"}, "text", child). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child); // strings become text nodes
  return node;
}

function setBar(bar, percent, text) {
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-valuetext", text ?? `${percent}%`);
  bar.querySelector(".fill").style.width = `${percent}%`; // CSSOM, which a strict CSP allows
}

// ---- talking to the server -----------------------------------------------------------------------------

async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
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
  if (!response.ok) throw new CommandError(data?.detail ?? `HTTP ${response.status}`, data?.type, response.status);
  return data;
}

let toastTimer = null;
function toast(text, kind = "error") {
  const box = $("toast");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 6000);
}

/** Disable a button while its command runs; show the server's refusal if there is one. */
async function run(button, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await action();
  } catch (error) {
    toast(error instanceof CommandError ? error.message : String(error));
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function showConnection(state, stream) {
  const conn = $("conn");
  conn.dataset.state = state;
  if (state === "reconnecting") {
    const wait = Math.ceil(((stream.retryAt ?? 0) - Date.now()) / 1000);
    conn.textContent = wait > 0 ? `Reconnecting… (retry in ${wait} s)` : "Reconnecting…";
  } else {
    conn.textContent = { live: "Live", connecting: "Connecting…", gone: "Not found" }[state] ?? state;
  }
  document.body.dataset.conn = state;
}

// ---- notifications ---------------------------------------------------------------------------------------

function setupNotifications() {
  const button = $("notify");
  if (!("Notification" in window)) return;
  const show = () => (button.hidden = Notification.permission !== "default");
  show();
  button.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    show();
    toast(answer === "granted" ? "Notifications are on." : "Notifications are blocked for this site.", "info");
  });
}

/** A desktop notification for the moments the spec names, whether or not this tab is in view. */
function notifyFor(m, view) {
  if (!view || !("Notification" in window) || Notification.permission !== "granted") return;
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

// ---- the task page -----------------------------------------------------------------------------------

class LogPanel {
  constructor() {
    this.list = $("logs");
    this.positions = new Set();
    this.last = 0;
  }

  add(lines) {
    const fresh = lines.filter((line) => !this.positions.has(line.position));
    if (!fresh.length) return;
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 24;
    fresh.sort((a, b) => a.position - b.position);
    if (fresh[0].position < this.last) {
      // An older line (from the HTTP backlog) after newer ones (from the stream): put all in order.
      const all = [...this.list.children, ...fresh.map((line) => this.item(line))];
      all.sort((a, b) => a.dataset.position - b.dataset.position);
      this.list.replaceChildren(...all);
    } else {
      this.list.append(...fresh.map((line) => this.item(line)));
    }
    for (const line of fresh) this.positions.add(line.position);
    this.last = Math.max(this.last, fresh.at(-1).position);
    while (this.list.children.length > MAX_LOG_LINES) this.list.firstElementChild.remove();
    $("logs-empty").hidden = true;
    $("log-count").textContent = `(${this.positions.size})`;
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  item(line) {
    return el(
      "li",
      { class: "log", "data-level": line.level, "data-position": line.position },
      el("time", { datetime: line.at, title: when(line.at) }, clock(line.at)),
      el("span", { class: "level" }, line.level),
      line.step ? el("span", { class: "log-step" }, `Step ${line.step}`) : null,
      el("span", { class: "message" }, line.message),
    );
  }
}

function taskPage() {
  const taskId = decodeURIComponent(location.pathname.split("/").pop());
  const logs = new LogPanel();
  let view = null;
  let takeNextSnapshot = false;
  let refreshTimer = null;
  let refreshDue = Infinity;

  const stream = new LiveStream(`/ws/tasks/${encodeURIComponent(taskId)}`, {
    key: "seq",
    onState: (state) => {
      showConnection(state, stream);
      $("box").dataset.stale = state === "live" ? "false" : "true";
      if (state === "gone") notFound();
    },
    onOpen: () => view && scheduleRefresh(0), // back after a gap: re-read the view as well
    onMessage: (m) => {
      if (m.type === "snapshot") {
        if (takeNextSnapshot || isAtLeastAsNew(m.view, view)) adopt(m.view, true);
        takeNextSnapshot = false;
        if (!logs.loaded) loadLogs();
        return;
      }
      if (m.type === "resync_required") {
        takeNextSnapshot = true;
        return;
      }
      if (m.type === "error") {
        if (m.code !== "task-not-found") toast(m.detail);
        return;
      }
      if (m.type === "log") logs.add([m]);
      if (!view) return;
      apply(view, m);
      notifyFor(m, view);
      render();
      if (!TICKS.has(m.type)) scheduleRefresh(250);
      else if (view.eta_seconds != null && m.type !== "log") scheduleRefresh(2000); // the ETA moved
    },
  });

  function adopt(next, force = false) {
    if (!force && !isAtLeastAsNew(next, view)) return;
    next.part = 0;
    view = next;
    render();
  }

  function scheduleRefresh(delay) {
    const due = Date.now() + delay;
    if (refreshTimer && refreshDue <= due) return;
    clearTimeout(refreshTimer);
    refreshDue = due;
    refreshTimer = setTimeout(refresh, delay);
  }

  async function refresh() {
    refreshTimer = null;
    refreshDue = Infinity;
    if (!view) return;
    try {
      adopt(await api(`/api/tasks/${taskId}/progress?min_position=${view.position ?? 0}`));
    } catch {
      // The stream brings the same changes; a failed re-read only delays fields messages do not carry.
    }
  }

  async function loadLogs() {
    logs.loaded = true;
    let after = 0;
    for (let page = 0; page < 20; page++) {
      let batch;
      try {
        batch = (await api(`/api/tasks/${taskId}/logs?after=${after}&limit=1000`)).logs;
      } catch {
        logs.loaded = false; // try again with the next snapshot
        return;
      }
      logs.add(batch.slice(-MAX_LOG_LINES));
      if (batch.length < 1000) return;
      after = batch.at(-1).position;
    }
  }

  function notFound() {
    const box = $("box");
    box.removeAttribute("aria-busy");
    box.dataset.status = "missing";
    $("title").textContent = "Task not found";
    $("current").textContent = "There is no such task, or it is not yours.";
    for (const id of ["bar", "substeps", "approval", "failure"]) $(id).hidden = true;
    document.title = "Not found · progressd";
  }

  // -- rendering

  function render() {
    if (!view) return;
    const box = $("box");
    box.removeAttribute("aria-busy");
    box.dataset.status = taskState(view);
    box.dataset.version = String(view.version);
    $("title").textContent = view.title;
    document.title = `${view.status === "completed" ? "✓" : `${view.progress}%`} · ${view.title} · progressd`;
    const badge = $("status");
    badge.textContent = `${taskSymbol(view)} ${taskWord(view)}`;
    badge.dataset.state = taskState(view);
    setBar($("bar"), view.progress, `${view.progress}%, ${currentLine(view)}`);
    $("percent").textContent = `${view.progress}%`;
    $("current").textContent = currentLine(view);
    renderSubsteps();
    renderNotices();
    renderButtons();
    renderSteps();
    renderTimes();
  }

  function renderSubsteps() {
    const step = view.steps[view.current_step - 1];
    const list = $("substeps");
    const show = step && step.substeps.length && !["completed", "cancelled"].includes(view.status);
    list.hidden = !show;
    if (!show) return list.replaceChildren();
    const next = step.substeps.findIndex((s) => !s.done);
    const items = step.substeps.map((sub, i) => {
      const state = sub.done ? "done" : i === next && step.status === "running" ? "active" : "pending";
      const symbol = { done: "✓", active: "◐", pending: "○" }[state];
      const note = { done: "", active: "(in progress)", pending: "(pending)" }[state];
      return el(
        "li",
        { class: "substep", "data-state": state },
        el("span", { class: "branch", "aria-hidden": "true" }, i === step.substeps.length - 1 ? "└─" : "├─"),
        el("span", { class: "name" }, sub.name),
        el("span", { class: "sym", "aria-hidden": "true" }, symbol),
        note ? el("span", { class: "note" }, note) : el("span", { class: "sr-only" }, "(done)"),
      );
    });
    list.replaceChildren(...items);
  }

  function renderNotices() {
    const waiting = view.steps.find((s) => s.status === "approval");
    const approval = $("approval");
    approval.hidden = !waiting || view.status === "cancelled";
    if (waiting) {
      $("approval-h").textContent = `⚠ Approval required for Step ${waiting.order}: ${waiting.name}`;
      $("approval-msg").textContent = waiting.approval?.message ?? "";
      approval.dataset.step = String(waiting.order);
    }
    const failed = view.steps.find((s) => s.status === "failed");
    const failure = $("failure");
    failure.hidden = !failed || view.status === "cancelled";
    if (failed) {
      const tries = failed.attempts > 1 ? ` (attempt ${failed.attempts})` : "";
      $("failure-h").textContent = `✕ Step ${failed.order} failed: ${failed.name}${tries}`;
      $("failure-msg").textContent = failed.error ?? "No error message.";
      failure.dataset.step = String(failed.order);
    }
    const outcome = $("outcome");
    outcome.hidden = !isFinished(view);
    outcome.dataset.status = view.status;
    if (view.status === "completed") outcome.textContent = `✓ Completed${view.result ? `: ${view.result}` : ""}`;
    if (view.status === "cancelled") outcome.textContent = `⊘ Cancelled${view.error ? `: ${view.error}` : ""}`;
  }

  function renderButtons() {
    const s = view.status;
    $("pause").hidden = s !== "running";
    $("resume").hidden = s !== "paused";
    $("cancel").hidden = isFinished(view);
    $("restart").hidden = !["completed", "cancelled", "failed"].includes(s) || Boolean(view.restarted_as);
    const link = $("restarted");
    link.hidden = !view.restarted_as;
    if (view.restarted_as) link.href = `/tasks/${view.restarted_as}`;
  }

  function renderSteps() {
    const now = stream.now();
    const items = view.steps.map((step) => {
      const state = stepState(view, step);
      const work = liveWorkMs(view, step, now);
      const meta = [stepWord(state)];
      if (state === "running" || state === "paused") meta.push(`${step.progress}%`);
      if (state === "completed" && step.duration_ms != null) meta[0] = `Completed in ${duration(step.duration_ms)}`;
      else if (work != null && state !== "pending" && state !== "skipped") meta.push(duration(work));
      if (step.attempts > 1) meta.push(`attempt ${step.attempts}`);
      const current = step.order === view.current_step && !isFinished(view);
      return el(
        "li",
        { class: "step", "data-state": state, "aria-current": current ? "step" : null },
        el("span", { class: "sym", "aria-hidden": "true" }, STEP_SYMBOL[state] ?? "○"),
        el(
          "div",
          { class: "step-body" },
          el(
            "div",
            { class: "step-line" },
            el("span", { class: "step-name" }, `${step.order}. ${step.name}`),
            el("span", { class: "step-meta" }, meta.join(" · ")),
          ),
          state === "running" || state === "paused" ? miniBar(step.progress, `Step ${step.order} progress`) : null,
          step.error && state === "failed" ? el("p", { class: "step-error" }, step.error) : null,
          state === "approval" && step.approval ? el("p", { class: "step-note" }, step.approval.message) : null,
        ),
      );
    });
    $("steps").replaceChildren(...items);
  }

  function renderTimes() {
    if (!view) return;
    const now = stream.now();
    const started = $("started");
    if (view.started_at) {
      started.textContent = `Started: ${ago(view.started_at, now)}`;
      started.title = when(view.started_at);
    } else {
      started.textContent = "Started: not yet";
      started.title = `Created ${when(view.created_at)}`;
    }
    const eta = $("eta");
    if (view.status === "completed" || view.status === "cancelled") {
      const word = view.status === "completed" ? "Finished" : "Cancelled";
      const took = view.started_at ? ` · took ${duration(Date.parse(view.finished_at) - Date.parse(view.started_at))}` : "";
      eta.textContent = `${word}: ${ago(view.finished_at, now)}${took}`;
      eta.title = when(view.finished_at);
    } else {
      const { text, hint } = etaText(view, now);
      eta.textContent = `ETA: ${text}`;
      eta.title = hint;
    }
  }

  // -- actions

  function command(button, name, frame, path, body) {
    button.addEventListener("click", () =>
      run(button, async () => {
        // Over the socket when it is up (answered by an ack; the change itself arrives on the stream),
        // over HTTP otherwise (answered with the new view).
        if (frame && stream.isOpen) await stream.command(frame());
        else adopt(await api(`/api/tasks/${taskId}${path()}`, { method: "POST", body: body?.() }));
        if (name === "approve" || name === "reject") $("comment").value = "";
      }),
    );
  }
  const approvalStep = () => Number($("approval").dataset.step);
  const failedStep = () => Number($("failure").dataset.step);
  const comment = () => $("comment").value.trim() || undefined;
  command($("pause"), "pause", () => ({ type: "pause" }), () => "/pause");
  command($("resume"), "resume", () => ({ type: "resume" }), () => "/resume");
  command(
    $("approve"),
    "approve",
    () => ({ type: "approve", step: approvalStep(), comment: comment() }),
    () => `/steps/${approvalStep()}/approve`,
    () => ({ comment: comment() }),
  );
  command(
    $("reject"),
    "reject",
    () => ({ type: "reject", step: approvalStep(), comment: comment() }),
    () => `/steps/${approvalStep()}/reject`,
    () => ({ comment: comment() }),
  );
  command($("retry"), "retry", null, () => `/steps/${failedStep()}/retry`);
  command($("skip"), "skip", null, () => `/steps/${failedStep()}/skip`);

  // Cancel asks once more, in place: a second click within a few seconds confirms.
  const cancel = $("cancel");
  let confirmTimer = null;
  cancel.addEventListener("click", () => {
    if (!cancel.dataset.confirm) {
      cancel.dataset.confirm = "yes";
      cancel.textContent = "Confirm cancel";
      confirmTimer = setTimeout(resetCancel, 4000);
      return;
    }
    resetCancel();
    run(cancel, async () => {
      if (stream.isOpen) await stream.command({ type: "cancel", reason: "cancelled from the progress page" });
      else adopt(await api(`/api/tasks/${taskId}/cancel`, { method: "POST", body: {} }));
    });
  });
  function resetCancel() {
    clearTimeout(confirmTimer);
    delete cancel.dataset.confirm;
    cancel.textContent = "Cancel";
  }

  const restart = $("restart");
  restart.addEventListener("click", () =>
    run(restart, async () => {
      const next = await api(`/api/tasks/${taskId}/restart`, { method: "POST" });
      location.assign(`/tasks/${next.task_id}`);
    }),
  );

  setInterval(() => {
    renderTimes();
    if (view?.steps.some((s) => s.status === "running")) renderSteps();
    if (document.body.dataset.conn === "reconnecting") showConnection("reconnecting", stream);
  }, 1000);
  stream.connect();
}

// ---- the task list -----------------------------------------------------------------------------------

function listPage() {
  const views = new Map();
  const rows = new Map();
  let loadTimer = null;

  const stream = new LiveStream("/ws/tasks", {
    key: "position",
    onState: (state) => showConnection(state, stream),
    onOpen: () => load(), // the stream sends only unfinished tasks: the list has the rest, and any gap
    onMessage: (m) => {
      if (m.type === "snapshot") return merge(m.view);
      if (m.type === "error") return toast(m.detail);
      const view = views.get(m.task_id);
      if (m.type === "task_created" && !view) {
        const skeleton = {
          task_id: m.task_id,
          title: m.title,
          total_steps: m.total_steps,
          status: "pending",
          progress: 0,
          steps: [],
          version: m.seq,
          part: m.part === m.parts ? 0 : m.part,
          created_at: m.at,
          updated_at: m.at,
          eta_seconds: null,
        };
        views.set(m.task_id, skeleton);
        render();
        scheduleLoad(300);
        return;
      }
      if (!view) return scheduleLoad(300); // a task this page has not seen: the list will have it
      apply(view, m);
      notifyFor(m, view);
      render();
      if (!TICKS.has(m.type)) scheduleLoad(500);
      else if (view.eta_seconds != null && m.type !== "log") scheduleLoad(3000);
    },
  });

  function merge(view) {
    const known = views.get(view.task_id);
    if (!isAtLeastAsNew(view, known)) return;
    view.part = 0;
    views.set(view.task_id, view);
    render();
  }

  function scheduleLoad(delay) {
    if (loadTimer) return;
    loadTimer = setTimeout(load, delay);
  }

  async function load() {
    clearTimeout(loadTimer);
    loadTimer = null;
    try {
      const { tasks } = await api("/api/tasks?limit=100");
      for (const view of tasks) merge(view);
      $("tasks").dataset.loaded = "true";
      render();
    } catch {
      // Shown as not live by the connection pill; the next reconnect loads again.
    }
  }

  function render() {
    const sorted = [...views.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    const list = $("tasks");
    sorted.forEach((view, i) => {
      let row = rows.get(view.task_id);
      if (!row) {
        row = newRow(view);
        rows.set(view.task_id, row);
      }
      updateRow(row, view);
      if (list.children[i] !== row) list.insertBefore(row, list.children[i] ?? null);
    });
    $("empty").hidden = sorted.length > 0 || list.dataset.loaded !== "true";
    const count = (pred) => sorted.filter(pred).length;
    const parts = [`${sorted.length} ${sorted.length === 1 ? "task" : "tasks"}`];
    const running = count((v) => v.status === "running");
    const attention = count((v) => v.needs_attention && !isFinished(v));
    if (running) parts.push(`${running} running`);
    if (attention) parts.push(`${attention} ${attention === 1 ? "needs" : "need"} attention`);
    $("summary").textContent = parts.join(" · ");
    document.title = `${attention ? `(${attention}) ` : ""}Tasks · progressd`;
  }

  function newRow(view) {
    const bar = el(
      "span",
      { class: "bar mini", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
      el("span", { class: "fill" }),
    );
    return el(
      "li",
      { class: "task", "data-task": view.task_id },
      el(
        "a",
        { class: "task-link", href: `/tasks/${view.task_id}` },
        el("span", { class: "sym", "aria-hidden": "true" }),
        el(
          "span",
          { class: "task-body" },
          el("span", { class: "task-title" }),
          el("span", { class: "task-sub" }),
        ),
        el("span", { class: "task-meter" }, bar, el("span", { class: "pct" })),
        el("span", { class: "task-side" }, el("span", { class: "badge" }), el("span", { class: "task-eta" })),
      ),
    );
  }

  function updateRow(row, view) {
    const q = (selector) => row.querySelector(selector);
    row.dataset.state = taskState(view);
    q(".sym").textContent = taskSymbol(view);
    q(".task-title").textContent = view.title;
    q(".task-sub").textContent = view.steps?.length ? currentLine(view) : `${view.total_steps ?? ""} steps`;
    const bar = q(".bar");
    bar.setAttribute("aria-label", `${view.title} progress`);
    setBar(bar, view.progress);
    q(".pct").textContent = `${view.progress}%`;
    const badge = q(".badge");
    badge.textContent = taskWord(view);
    badge.dataset.state = taskState(view);
    updateEta(row, view);
  }

  function updateEta(row, view) {
    const eta = row.querySelector(".task-eta");
    if (isFinished(view)) {
      eta.textContent = view.finished_at ? ago(view.finished_at, stream.now()) : "";
      eta.title = view.finished_at ? when(view.finished_at) : "";
      return;
    }
    const { text, hint } = etaText(view, stream.now());
    eta.textContent = `ETA: ${text}`;
    eta.title = hint;
  }

  setInterval(() => {
    for (const [id, row] of rows) updateEta(row, views.get(id));
    if (document.body.dataset.conn === "reconnecting") showConnection("reconnecting", stream);
  }, 1000);
  stream.connect();
}

setupNotifications();
if (document.body.dataset.page === "task") taskPage();
else listPage();
