// The task page: the spec's progress box, the steps, the logs, and the buttons that fit the task's state.

import { LiveStream } from "./live.js";
import {
  STEP_SYMBOL,
  ago,
  apply,
  clock,
  currentLine,
  duration,
  etaText,
  hasEstimate,
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
import {
  $,
  TICKS,
  api,
  el,
  glyph,
  miniBar,
  notifyFor,
  run,
  setBar,
  showConnection,
  streams,
  toast,
  token,
} from "./ui.js";

const MAX_LOG_LINES = 400;
const REREAD_MS = 10_000;

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

export function taskPage() {
  const taskId = decodeURIComponent(location.pathname.split("/").pop());
  const logs = new LogPanel();
  let view = null;
  let takeNextSnapshot = false;
  let refreshTimer = null;
  let refreshDue = Infinity;
  let lastRead = 0;

  const stream = new LiveStream(`/ws/tasks/${encodeURIComponent(taskId)}`, {
    key: "seq",
    token,
    onState: (state) => {
      showConnection(state, stream);
      $("box").dataset.stale = state === "reconnecting" ? "true" : "false";
      $("stale").hidden = state !== "reconnecting";
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
      else if (view.eta_seconds != null && m.type !== "log" && !hasEstimate(m)) scheduleRefresh(2000);
    },
  });

  function adopt(next, force = false) {
    if (!force && !isAtLeastAsNew(next, view)) return;
    next.part = 0;
    next.read_at = stream.now(); // the estimate is as of this read (see remaining)
    view = next;
    lastRead = Date.now();
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
    for (const id of ["meter", "times", "substeps", "approval", "failure", "steps-panel", "logs-panel"]) {
      $(id).hidden = true;
    }
    $("back").hidden = false;
    document.title = "Not found · progressd";
  }

  // -- rendering

  function render() {
    if (!view) return;
    const focused = document.activeElement;
    const box = $("box");
    box.removeAttribute("aria-busy");
    box.dataset.status = taskState(view);
    box.dataset.version = String(view.version);
    $("title").textContent = view.title;
    document.title = `${view.status === "completed" ? "✓" : `${view.progress}%`} · ${view.title} · progressd`;
    const badge = $("status");
    badge.replaceChildren(glyph(taskSymbol(view)), ` ${taskWord(view)}`);
    badge.dataset.state = taskState(view);
    setBar($("bar"), view.progress, `${view.progress}%, ${currentLine(view)}`);
    $("percent").textContent = `${view.progress}%`;
    $("current").textContent = currentLine(view);
    renderSubsteps();
    renderNotices();
    renderButtons();
    renderSteps();
    renderTimes();
    keepFocus(focused);
  }

  /** A keyboard user whose button just went away (Pause became Resume) lands on the next action, not on <body>. */
  function keepFocus(before) {
    if (!before || before === document.body || !$("box").contains(before) || before.offsetParent) return;
    [...$("box").querySelectorAll("button")].find((button) => button.offsetParent)?.focus();
  }

  function renderSubsteps() {
    const step = view.steps[view.current_step - 1];
    const list = $("substeps");
    const show = step && step.substeps.length && !["completed", "cancelled"].includes(view.status);
    list.hidden = !show;
    if (!show) return list.replaceChildren();
    const next = step.substeps.findIndex((s) => !s.done);
    const items = step.substeps.map((sub, i) => {
      const last = i === step.substeps.length - 1;
      const held = i === next && step.status === "paused";
      const state = sub.done ? "done" : i === next && step.status === "running" ? "active" : held ? "paused" : "pending";
      const symbol = { done: "✓", active: "◐", paused: "⏸", pending: "○" }[state];
      const note = { done: "", active: "(in progress)", paused: "(paused)", pending: "(pending)" }[state];
      return el(
        "li",
        { class: "substep", "data-state": state },
        el("span", { class: "branch", "aria-hidden": "true" }, last ? "└─" : "├─"),
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
      if (state === "completed" && step.duration_ms != null) {
        meta[0] = `Completed in ${duration(step.duration_ms)}`;
      } else if (work != null && state !== "pending" && state !== "skipped") {
        meta.push(duration(work));
      }
      if (step.attempts > 1) meta.push(`attempt ${step.attempts}`);
      if (state === "running" && view.stalled_step === step.order) meta.push("⚠ no progress for a while");
      const current = step.order === view.current_step && !isFinished(view);
      return el(
        "li",
        { class: "step", "data-state": state, "aria-current": current ? "step" : null },
        el("span", { class: "sym", "aria-hidden": "true" }, glyph(STEP_SYMBOL[state] ?? "○")),
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
      const ms = Date.parse(view.finished_at) - Date.parse(view.started_at);
      const took = view.started_at ? ` · took ${duration(ms)}` : "";
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

  streams.add(stream);
  setInterval(() => {
    // A quiet stream carries no news of the estimate (it grows while a step takes longer than expected) or of
    // a stall: read the view again every so often while the task is not finished.
    if (view && !isFinished(view) && Date.now() - lastRead > REREAD_MS) scheduleRefresh(0);
    renderTimes();
    if (view?.steps.some((s) => s.status === "running")) renderSteps();
    if (document.body.dataset.conn === "reconnecting") showConnection("reconnecting", stream);
  }, 1000);
  stream.connect();
}
