// The progress view on the client: apply stream messages to the server's progress JSON, and say it in words.
//
// The server's view (a snapshot, or a GET) is the truth; messages move it between two such views so the
// page reacts at once. `apply` mirrors domain/task.py closely enough for what the page shows, and the page
// re-reads the server's view after each transition, so any field a message does not carry is exact too.

export const STEP_SYMBOL = {
  completed: "✓",
  running: "◐",
  pending: "○",
  approval: "⚠",
  failed: "✕",
  paused: "⏸",
  skipped: "⤼",
  stopped: "⊘",
};

const STEP_WORD = {
  completed: "Completed",
  running: "Running",
  pending: "Pending",
  approval: "Needs approval",
  failed: "Failed",
  paused: "Paused",
  skipped: "Skipped",
  stopped: "Stopped",
};

const TASK_WORD = {
  pending: "Waiting to start",
  running: "Running",
  paused: "Paused",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

const ACTIVE = new Set(["running", "paused", "approval"]);
const FINISHED_TASK = new Set(["completed", "cancelled"]);

/** What a step shows: its own status, except that the active steps of a cancelled task have stopped. */
export function stepState(view, step) {
  return view.status === "cancelled" && ACTIVE.has(step.status) ? "stopped" : step.status;
}

export function stepWord(state) {
  return STEP_WORD[state] ?? state;
}

/** The task's one symbol: what a person should notice first. */
export function taskState(view) {
  if (view.status === "running" && view.needs_attention) return "attention";
  return view.status;
}

export function taskSymbol(view) {
  return (
    {
      completed: "✓",
      failed: "✕",
      cancelled: "⊘",
      attention: "⚠",
      paused: "⏸",
      running: "◐",
    }[taskState(view)] ?? "○"
  );
}

export function taskWord(view) {
  if (taskState(view) === "attention") {
    if (view.steps?.some((s) => s.status === "approval")) return "Needs approval";
    return view.stalled_step ? `Step ${view.stalled_step} stalled` : "Needs attention";
  }
  return TASK_WORD[view.status] ?? view.status;
}

export function isFinished(view) {
  return FINISHED_TASK.has(view.status);
}

/** "Step 2 of 4: Generate application UI", or what the task has come to. */
export function currentLine(view) {
  const total = view.total_steps ?? view.steps?.length ?? 0;
  const step = view.steps?.[(view.current_step ?? 1) - 1];
  if (view.status === "completed") return `All ${total} steps done`;
  if (!step) return total ? `${total} steps` : "";
  const line = `Step ${step.order} of ${total}: ${step.name}`;
  return view.status === "cancelled" ? `Cancelled at ${line}` : line;
}

// ---- applying messages -------------------------------------------------------------------------------

/** True when message m is not yet reflected in the view (by the task's own sequence and message part). */
export function isNewer(view, m) {
  if (m.seq > view.version) return true;
  return m.seq === view.version && (view.part ?? 0) !== 0 && m.part > view.part;
}

/** Adopt a whole view from the server when it is at least as new as what we have; true if adopted. */
export function isAtLeastAsNew(candidate, current) {
  return !current || candidate.version >= current.version;
}

/** Apply one stream message to a view in place; false when the view already has it. */
export function apply(view, m) {
  if (m.type === "snapshot" || !isNewer(view, m)) return false;
  advanceClocks(view, m.at);
  const order = m.type === "approval_needed" ? m.approval.step : m.step;
  const step = order ? view.steps?.[order - 1] : undefined;
  if (step) step.updated_at = m.at;
  switch (m.type) {
    case "progress":
      view.progress = m.percent;
      if (step && m.step_percent != null) step.progress = m.step_percent;
      if (hasEstimate(m)) for (const k of ETA_FIELDS) view[k] = m[k];
      break;
    case "substep_done":
      if (step?.substeps[m.substep - 1]) step.substeps[m.substep - 1].done = true;
      break;
    case "step_started":
      if (step) startStep(view, step, m);
      break;
    case "approval_needed":
      if (!step) break;
      if (step.status === "pending") {
        step.started_at = m.at;
        step.attempts += 1;
        step.work_ms = 0;
      }
      step.status = "approval";
      step.approval = { message: m.approval.message, requested_at: m.at };
      refreshStatus(view, m.at);
      break;
    case "approval_resolved":
      if (!step) break;
      step.approval = null;
      if (m.approved) step.status = view.paused_at ? "paused" : "running";
      break;
    case "step_complete":
      if (!step) break;
      step.status = "completed";
      step.progress = 100;
      step.finished_at = m.at;
      step.duration_ms = m.duration_ms ?? step.work_ms;
      break;
    case "step_failed":
      if (!step) break;
      step.status = "failed";
      step.error = m.error;
      step.approval = null;
      step.finished_at = m.at;
      step.duration_ms = step.work_ms;
      refreshStatus(view, m.at);
      break;
    case "step_skipped":
      if (!step) break;
      if (step.started_at && !step.finished_at) step.finished_at = m.at;
      step.status = "skipped";
      step.error = null;
      step.progress = 100;
      step.duration_ms = step.started_at ? step.work_ms : null;
      refreshStatus(view, m.at);
      break;
    case "paused":
      view.status = "paused";
      view.paused_at = m.at;
      for (const s of view.steps ?? []) {
        if (s.status === "running") Object.assign(s, { status: "paused", updated_at: m.at });
      }
      break;
    case "resumed":
      view.status = "running";
      view.paused_at = null;
      for (const s of view.steps ?? []) {
        if (s.status === "paused") Object.assign(s, { status: "running", updated_at: m.at });
      }
      break;
    case "task_failed":
      view.status = "failed";
      view.error = m.error;
      break;
    case "task_complete":
      Object.assign(view, { status: "completed", result: m.result, finished_at: m.at, error: null });
      break;
    case "task_cancelled":
      Object.assign(view, { status: "cancelled", error: m.reason, finished_at: m.at, paused_at: null });
      for (const s of view.steps ?? []) if (ACTIVE.has(s.status) && !s.finished_at) s.finished_at = m.at;
      break;
    case "task_restarted":
      view.restarted_as = m.new_task_id;
      break;
  }
  view.version = m.seq;
  view.part = m.part === m.parts ? 0 : m.part;
  view.position = Math.max(view.position ?? 0, m.position);
  view.updated_at = m.at;
  derive(view);
  return true;
}

function startStep(view, step, m) {
  const retry = step.status === "failed" || m.attempt > 1;
  step.attempts = m.attempt;
  step.error = null;
  if (retry) {
    Object.assign(step, { started_at: m.at, finished_at: null, work_ms: 0, duration_ms: null, progress: 0 });
    step.status = view.paused_at ? "paused" : "running";
  } else {
    step.started_at = step.started_at ?? m.at;
    step.work_ms = step.work_ms ?? 0;
    step.status = "running";
  }
  refreshStatus(view, m.at); // an approval_needed part of the same event follows when the step must wait
}

/** The task's status after a retry, skip, failure or approval, as Task._refresh_status decides it. */
function refreshStatus(view, at) {
  const failed = (view.steps ?? []).find((s) => s.status === "failed");
  if (failed) {
    view.status = "failed";
    view.error = failed.error;
  } else if (view.status === "failed" || view.status === "pending") {
    view.status = view.paused_at ? "paused" : "running";
    view.error = null;
  }
  if (!view.started_at && view.status === "running") view.started_at = at;
}

const ETA_FIELDS = ["eta_seconds", "eta_low_seconds", "eta_high_seconds", "eta_confidence"];

/** Whether a live message carries the time estimate (as of its `at`, like the view's as of updated_at). */
export function hasEstimate(m) {
  return m.type === "progress" && m.eta_confidence != null;
}

/** Work clocks run for running steps: bring each step's work_ms from the view's updated_at up to `at`. */
function advanceClocks(view, at) {
  const dt = Date.parse(at) - Date.parse(view.updated_at);
  if (!(dt > 0)) return;
  for (const s of view.steps ?? []) if (clockRuns(view, s)) s.work_ms = (s.work_ms ?? 0) + dt;
}

function clockRuns(view, step) {
  return step.status === "running" && !step.finished_at && view.status !== "cancelled";
}

/** current_step and needs_attention, as domain/progress.py derives them. */
export function derive(view) {
  const steps = view.steps ?? [];
  if (!steps.length) return;
  const first = (status) => steps.find((s) => s.status === status);
  const current =
    first("failed") ?? first("approval") ?? first("running") ?? first("paused") ?? first("pending");
  view.current_step = current ? current.order : steps.length;
  view.needs_attention = steps.some((s) => s.status === "approval" || s.status === "failed");
}

// ---- time -------------------------------------------------------------------------------------------

/** A step's work time now: work_ms is as of the view's updated_at, and runs on while the step runs. */
export function liveWorkMs(view, step, now) {
  if (step.work_ms == null) return null;
  if (!clockRuns(view, step) || view.status === "paused") return step.work_ms;
  return step.work_ms + Math.max(0, now - Date.parse(view.updated_at));
}

/** Seconds left, counted down from the view's updated_at while the task runs; null when unknown. */
export function remaining(view, seconds, now) {
  if (seconds == null) return null;
  if (view.status !== "running") return seconds;
  // The server states the estimate as of updated_at. While no step runs (every active step waits for a
  // person) the work clock stands still: the estimate holds from the moment it was read, not counting down.
  const waiting = view.steps?.length && !view.steps.some((s) => s.status === "running");
  const until = waiting ? Math.min(now, view.read_at ?? now) : now;
  return seconds - Math.max(0, (until - Date.parse(view.updated_at)) / 1000);
}

export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 && m < 10 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
}

/** "42 s ago", "2 min ago", "3 h 5 min ago". */
export function ago(iso, now) {
  const ms = now - Date.parse(iso);
  if (ms < 1500) return "just now";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h} h ${m % 60} min ago` : `${h} h ago`;
  return `${Math.floor(h / 24)} days ago`;
}

/** The ETA line's text and its hover text (the interval), for any task state. */
export function etaText(view, now) {
  if (view.status === "completed") return { text: "Done", hint: "" };
  if (view.status === "cancelled") return { text: "—", hint: "Cancelled" };
  const left = remaining(view, view.eta_seconds, now);
  if (left == null) return { text: "—", hint: "No estimate yet" };
  const low = remaining(view, view.eta_low_seconds, now);
  const high = remaining(view, view.eta_high_seconds, now);
  const hint =
    low != null && high != null
      ? `Likely between ${roughly(Math.max(0, low))} and ${roughly(Math.max(0, high))} from now`
      : "";
  const suffix = view.status === "paused" ? " (paused)" : view.status === "failed" ? " once unblocked" : "";
  if (left <= 0) return { text: "any moment now", hint };
  return { text: `${roughly(left)} remaining${suffix}`, hint };
}

function roughly(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  const h = Math.floor(seconds / 3600);
  const m = Math.round((seconds % 3600) / 60);
  return m ? `${h} h ${m} min` : `${h} h`;
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function when(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}
