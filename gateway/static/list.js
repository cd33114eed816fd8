// The task list: every task of yours, newest first, live from the all-tasks stream.

import { LiveStream } from "./live.js";
import {
  ago,
  apply,
  currentLine,
  etaText,
  hasEstimate,
  isAtLeastAsNew,
  isFinished,
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
  setBar,
  showConnection,
  streams,
  toast,
  token,
} from "./ui.js";

export function listPage() {
  const views = new Map();
  const rows = new Map();
  let loadTimer = null;

  const stream = new LiveStream("/ws/tasks", {
    key: "position",
    token,
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
      else if (view.eta_seconds != null && m.type !== "log" && !hasEstimate(m)) scheduleLoad(3000);
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
      // With no unfinished task the stream sent no snapshot to take a cursor from: these views are one.
      stream.seed(Math.max(0, ...tasks.map((view) => view.position ?? 0)));
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
    const bar = miniBar(0, view.title);
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
    q(".sym").replaceChildren(glyph(taskSymbol(view)));
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

  streams.add(stream);
  setInterval(() => {
    for (const [id, row] of rows) updateEta(row, views.get(id));
    if (document.body.dataset.conn === "reconnecting") showConnection("reconnecting", stream);
  }, 1000);
  stream.connect();
}
