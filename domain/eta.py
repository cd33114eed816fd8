"""Time estimates: how long a task still needs, with an 80% interval, learned from the history of its steps.

The model, in log space (durations are skewed, so their logs are roughly normal):

    log D = mu + s + load * g + e        (and, rarely, a stall: several times longer)

`mu` is the step's reference: the recent median (recent samples weigh more: speeds drift) of finished steps
with the same normalised name and complexity class, blended with the same name at any complexity times a
learned complexity factor, and corrected for the task's number of tables by how that step grows with tables
across classes; without history, the typical step of this installation, else a fixed prior. `s` is the
task's own speed (tasks run uniformly slower or faster), `g` the shared error of the references themselves
(large for the prior, small after a long history), `e` the step's own noise; the stall tail is measured in
the history too.

The task's finished steps are observations of `s` and `g` (one that looks like a stall counts little). The
running step adds its rate (percent or substeps over work time) as a noisier observation the earlier it is,
so history and rate are blended by how far the step has got, and the fact that it has not finished after
the work so far. The remaining time is then drawn by Monte Carlo (seeded: an estimate is a pure function of
its inputs); its 10th and 90th percentiles are the interval, its median (a little lower, see `estimate`)
the ETA.

Pure: no I/O and no clock; `now` is a parameter. Paused and approval-waiting time is not work.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, lru_cache
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Confidence = Literal["low", "medium", "high"]
FloatArray = npt.NDArray[np.float64]
ANY = "any"
UNKNOWN = "unknown"  # what step_stats records for a task without a complexity
_N = NormalDist()
_Z90 = _N.inv_cdf(0.9)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class StepHistory:
    """Finished durations of one (normalised step name, complexity) group, as a step_stats row holds them."""

    count: int
    median_ms: float
    p90_ms: float
    recent: tuple[int, ...] = ()  # oldest first, as step_stats keeps them


History = Mapping[tuple[str, str], StepHistory]


class HistoryTable(dict[tuple[str, str], StepHistory]):
    """A history that keeps what the estimator derives from it (references per step name, the complexity
    factor), so estimates made from the same history do not derive them again. Never change one in place:
    build a new table when step_stats moves."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.derived: dict[tuple[str, int | None, int], tuple[EtaParams, _Context]] = {}


@dataclass(frozen=True)
class EtaParams:
    """The estimator's assumptions; the defaults are what `bench/eta.py` reports on."""

    coverage: float = 0.8  # the interval's target coverage
    draws: int = 400  # Monte Carlo draws of the remaining time (seeded: the same input gives the same answer)
    prior_step_ms: float = 60_000.0  # a step's duration when nothing at all is known
    prior_scale_sigma: float = 1.2  # how unsure that absolute scale is (log sd, shared by the task's steps)
    prior_kind_sigma: float = 0.7  # how much step kinds differ from one another (log sd)
    default_sigma: float = 0.45  # a step's spread before its history says otherwise (log sd)
    min_sigma: float = 0.08
    task_share: float = 0.4  # share of a step's spread that is the task's own speed, shared by its steps
    min_task_sigma: float = 0.2  # ...but tasks differ in speed by at least this much (log sd)
    rate_kappa: float = 0.25  # noise of the rate: var(log duration from rate) = kappa (1 - p) / p
    half_life: float = 100.0  # recent samples count half as much this many samples ago (speeds drift)
    any_weight: float = 2.0  # pseudo-count of the any-complexity group when a complexity group is small
    tail_prior: float = 0.01  # chance a step runs far beyond its usual spread, before history shows it
    tail_prior_shift: float = 1.4  # how far beyond its median such a step runs (log: about 4 times)
    tail_weight: float = 20.0  # pseudo-count of the tail prior
    stall_factor: float = 2.0  # no progress for this many times the step's usual p90 is a stall
    stall_min_ms: float = 5_000.0
    factor_sigma: float = 0.5  # how unsure that complexity factor is before history shows it (log sd)
    complexity_prior: Mapping[str, float] = field(
        default_factory=lambda: {"simple": 0.8, "medium": 1.0, "complex": 1.3}
    )
    class_tables: Mapping[str, float] = field(  # typical tables of each class, to learn how steps scale
        default_factory=lambda: {"simple": 1.5, "medium": 4.0, "complex": 7.0}
    )
    class_table_sd: Mapping[str, float] = field(  # log sd of the tables within a class (1-2, 3-5, 6-8)
        default_factory=lambda: {"simple": 0.35, "medium": 0.21, "complex": 0.12}
    )
    band: Mapping[str, float] = field(  # the spec's promise per class: within +-20/30/50% of the truth
        default_factory=lambda: {"simple": 0.2, "medium": 0.3, "complex": 0.5}
    )
    high_confidence: float = 0.7  # "high" when the ETA keeps that promise with at least this probability
    medium_confidence: float = 0.4


DEFAULT_PARAMS = EtaParams()


@dataclass(frozen=True)
class Estimate:
    """A task's time estimate: point, interval, a confidence label, and whether a person should look."""

    eta_seconds: int | None
    eta_low_seconds: int | None
    eta_high_seconds: int | None
    eta_confidence: Confidence | None
    needs_attention: bool
    basis: str
    stalled_step: int | None = None

    def fields(self) -> dict[str, Any]:
        """The members the progress JSON carries (needs_attention is OR-ed with the view's by the caller)."""
        return {
            "eta_seconds": self.eta_seconds,
            "eta_low_seconds": self.eta_low_seconds,
            "eta_high_seconds": self.eta_high_seconds,
            "eta_confidence": self.eta_confidence,
            "needs_attention": self.needs_attention,
        }


@lru_cache(maxsize=4096)
def normalise_step_name(name: str) -> str:
    """The step_stats grouping key: lower case, digits and punctuation dropped, single spaces.

    `projections.model` uses this same function for the `step_stats` read model.
    """
    return " ".join(re.sub(r"[^a-z ]+", " ", name.lower()).split())


def history_from_rows(rows: Iterable[Mapping[str, Any]]) -> HistoryTable:
    """step_stats rows (`recent` as JSON text or a list, or missing) as the estimator's history."""
    out = HistoryTable()
    for row in rows:
        raw = row.get("recent")
        recent = json.loads(raw) if isinstance(raw, str) else (raw or [])
        out[(str(row["step_key"]), str(row["complexity"]))] = StepHistory(
            count=int(row["count"]),
            median_ms=float(row["median_ms"]),
            p90_ms=float(row["p90_ms"]),
            recent=tuple(int(d) for d in recent),
        )
    return out


def eta_fields(
    view: Mapping[str, Any], history: History, now: datetime, params: EtaParams = DEFAULT_PARAMS
) -> dict[str, Any]:
    """The progress JSON's estimate members for a view served at `now` (and `stalled_step`: the step that
    has made no progress for far longer than its history suggests, or None).

    Estimated at `now` (so a step that has gone quiet is noticed), then stated as of the view's updated_at,
    because clients count eta_seconds down from updated_at while the task runs. needs_attention is the
    view's own (approval, failure) or the estimator's (a stall).
    """
    est = estimate(view, history, now, params)
    out = est.fields()
    updated = _parse(view.get("updated_at"))
    if est.eta_seconds is not None and view["status"] == "running" and updated is not None:
        gap = max(0, round((now - updated).total_seconds()))
        for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds"):
            out[name] += gap
    out["needs_attention"] = bool(view.get("needs_attention")) or est.needs_attention
    out["stalled_step"] = est.stalled_step
    return out


# ---- the estimator ----------------------------------------------------------------------------------------


def estimate(
    view: Mapping[str, Any], history: History, now: datetime, params: EtaParams = DEFAULT_PARAMS
) -> Estimate:
    """Estimate the time a task still needs, from its progress view as served, the step history and now."""
    status = view["status"]
    if status in ("completed", "cancelled"):
        return Estimate(None, None, None, None, False, f"task {status}")
    if status == "failed":
        return Estimate(None, None, None, None, True, "a step failed: waiting for a retry or a skip")
    ctx = _context(history, view.get("complexity"), view.get("tables"), params)
    steps = [s for s in view["steps"] if s["status"] != "skipped"]
    keys = {s["order"]: normalise_step_name(s["name"]) for s in steps}
    refs = {order: ctx.reference(key) for order, key in keys.items()}
    tau2 = ctx.task_variance(refs.values())
    noise = {order: ref.noise(tau2, params.task_share) for order, ref in refs.items()}

    completed = [s for s in steps if s["status"] == "completed" and s.get("duration_ms") is not None]
    done = [
        (
            refs[s["order"]],
            math.log(max(float(s["duration_ms"]), 1.0)) - refs[s["order"]].mu,
            noise[s["order"]],
        )
        for s in completed
    ]
    latent, weights = _speed(done, tau2)
    before = latent.copy()  # finished steps only: the running steps are predicted from this

    # A step name this installation has no history for, seen earlier in this very task (one step per table,
    # say), is predicted from those earlier runs: they tell what this kind of step takes here.
    ms, mg = latent.mean
    seen: dict[str, list[tuple[float, float]]] = {}
    for s, (ref, y, var), w in zip(completed, done, weights, strict=True):
        if ref.own_var > 0 and w > 0.5:
            seen.setdefault(keys[s["order"]], []).append((y - ms - ref.load * mg, var - ref.own_var))
    for order, key in keys.items():
        ref = refs[order]
        if key in seen and ref.own_var > 0:
            precision = 1 / ref.own_var + sum(1 / v for _, v in seen[key])
            shift = sum(r / v for r, v in seen[key]) / precision
            refs[order] = ref.moved(ref.mu + shift, 1 / precision)
            noise[order] = refs[order].noise(tau2, params.task_share)

    view_at = _parse(view["updated_at"]) or now
    running: list[_Running] = []
    stalled: int | None = None
    notes: list[str] = []
    for s in steps:
        if s["status"] in ("running", "paused", "approval"):
            ref, var = refs[s["order"]], noise[s["order"]]
            clock = s["status"] == "running" and status == "running"
            step, stall, note = _running_step(s, ref, var, before, latent, view_at, now, clock, params)
            running.append(step)
            stalled = stalled or (s["order"] if stall else None)
            notes += [note] if note else []
    pending = [
        _Pending(ref.mu, ref.load, math.sqrt(noise[s["order"]]), ref.tail_p, ref.tail_shift, ref.tail_var)
        for s in steps
        if s["status"] == "pending"
        for ref in (refs[s["order"]],)
    ]
    outcomes = _simulate(latent, running, pending, params)

    lo = (1 - params.coverage) / 2
    # The point most likely to be within the spec's band (+-b) of the truth: the window [eta / (1 + b),
    # eta / (1 - b)] is wider above than below, so for an outcome symmetric in log space it centres on the
    # median when eta = median * sqrt(1 - b^2), a few per cent below it.
    band = params.band.get(view.get("complexity") or "", 0.3)
    eta_ms = _quantile(outcomes, 0.5) * math.sqrt(1 - band * band)
    eta = max(1, round(eta_ms / 1000))
    low = min(eta, max(0, math.floor(_quantile(outcomes, lo) / 1000)))
    high = max(eta, math.ceil(_quantile(outcomes, 1 - lo) / 1000))
    # Confidence: how likely the ETA is to keep the spec's promise (within +-b of the truth).
    kept = _share_within(outcomes, eta_ms, band)
    sources = sorted({refs[s["order"]].source for s in steps if s["status"] != "completed"})
    confidence: Confidence = "high" if kept >= params.high_confidence else "medium"
    if kept < params.medium_confidence or stalled is not None or (sources == ["prior"] and not done):
        confidence = "low"
    attention = stalled is not None or any(s["status"] == "approval" for s in steps)
    basis = "; ".join(
        [
            "+".join(sources) if sources else "history",
            f"speed x{math.exp(latent.mean[0]):.2f} from {len(done)} finished step(s)",
            *notes,
            *([f"step {stalled} stalled"] if stalled is not None else []),
            *(["paused: the clock is stopped"] if status == "paused" else []),
        ]
    )
    return Estimate(eta, low, high, confidence, attention, basis, stalled)


def _speed(done: list[tuple[_Ref, float, float]], tau2: float) -> tuple[_Latent, list[float]]:
    """The task's speed from its finished steps (reference, log ratio, noise), and how much each counted.

    A step far beyond its kind's spread may be a stall, which says little about the speed; several such
    steps together say the task is slow. So a step's weight is the chance it was not a stall given the
    others (leave one out), settled by a few rounds of reweighting.
    """
    weights = [1.0] * len(done)
    prior = 1 / max(tau2, 1e-6)
    for _ in range(4 if done else 0):
        # _Latent's observe and predict written out on plain floats, each step left out by subtracting its
        # observation: this runs 4 x steps times for every estimate.
        seen = [
            (ref, y, var, max(var / max(w, 0.05), 1e-6))
            for (ref, y, var), w in zip(done, weights, strict=True)
        ]
        a, b, d, u, v = prior, 0.0, 1.0, 0.0, 0.0
        for ref, y, _, e in seen:
            load = ref.load
            a += 1 / e
            b += load / e
            d += load * load / e
            u += y / e
            v += load * y / e
        updated = []
        for ref, y, var, e in seen:
            load = ref.load
            oa, ob, od = a - 1 / e, b - load / e, d - load * load / e
            ou, ov = u - y / e, v - load * y / e
            det = oa * od - ob * ob
            css, csg, cgg = od / det, -ob / det, oa / det
            m = 0.0 + (css * ou + csg * ov) + load * (csg * ou + cgg * ov)
            var_m = var + css + 2 * load * csg + load * load * cgg
            bulk = (1 - ref.tail_p) * _pdf(y, m, var_m)
            tail = ref.tail_p * _pdf(y, m + ref.tail_shift, var_m + ref.tail_var)
            updated.append(bulk / (bulk + tail) if bulk + tail > 0 else 0.0)
        weights = updated
    latent = _Latent(tau2)
    for (ref, y, var), w in zip(done, weights, strict=True):
        latent.observe(ref.load, y, var / max(w, 0.05))
    return latent, weights


def _running_step(
    step: Mapping[str, Any],
    ref: _Ref,
    var: float,
    before: _Latent,
    latent: _Latent,
    view_at: datetime,
    now: datetime,
    clock: bool,
    params: EtaParams,
) -> tuple[_Running, bool, str | None]:
    """A started step's remaining work, whether it has stalled, and what its rate said (updates `latent`).

    Its work so far is work_ms as of the view plus, while its clock runs, the time since; paused and
    approval time is not work. Its rate is the progress at its last report over the work done by then.
    """
    gap = max(0.0, (now - view_at).total_seconds() * 1000) if clock else 0.0
    elapsed = float(step.get("work_ms") or 0) + gap
    quiet = (
        max(0.0, (now - (_parse(step.get("updated_at")) or view_at)).total_seconds() * 1000) if clock else 0.0
    )
    worked_then = max(0.0, elapsed - quiet)
    p = _fraction(step)
    m0, v0 = before.predict(ref.mu, ref.load, var)
    stalled = clock and quiet > max(
        params.stall_factor * math.exp(m0 + _Z90 * math.sqrt(v0)), params.stall_min_ms
    )
    m1, v1, note = m0, v0, None
    if 0 < p < 1 and worked_then > 0:
        # The rate's duration, log(work / fraction), is noisier the earlier the step is: precision-weighted.
        r2 = max(params.rate_kappa * (1 - p) / p, 1e-3)
        m1, v1 = (m0 * r2 + math.log(worked_then / p) * v0) / (v0 + r2), v0 * r2 / (v0 + r2)
        note = f"step {step['order']} at {p:.0%}"
    running = _Running.given(m1, v1, ref, elapsed)
    if not stalled and running.bulk_weight >= 0.5:
        cur = _truncated(m1, v1, running.lower)
        site = _site(m0, v0, cur.log_mean, cur.log_var)
        if site is not None:
            latent.observe(ref.load, site[0] - ref.mu, var + site[1])
    return running, stalled, note


def _fraction(step: Mapping[str, Any]) -> float:
    """How far a step is, 0 to 1: its reported percent or its share of substeps done, whichever is more."""
    subs = step.get("substeps") or []
    done = sum(1 for x in subs if x.get("done")) / len(subs) if subs else 0.0
    return max(float(step.get("progress") or 0) / 100, done)


def _parse(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


# ---- references: what a step usually takes --------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """A step's reference duration (log ms), its spread, and how unsure the reference itself is."""

    mu: float
    var: float  # spread of such steps across tasks, in log space, stalls left out
    load: float  # sd of the reference's own error, shared by the task's steps (the latent g)
    own_var: float  # spread that is never the task's speed (the kind of step is unknown)
    tail_p: float  # chance the step runs far beyond that spread (a stall)
    tail_shift: float
    tail_var: float
    source: str

    def moved(self, mu: float, own_var: float) -> _Ref:
        """The same reference with another median and own variance (dataclasses.replace is slower)."""
        tail = (self.tail_p, self.tail_shift, self.tail_var)
        return _Ref(mu, self.var, self.load, own_var, *tail, self.source)

    def noise(self, tau2: float, share: float) -> float:
        """The step's own variance once the task's speed is accounted for (never less than its share)."""
        return max(self.var - tau2, (1 - share) * self.var) + self.own_var


@dataclass(frozen=True)
class _Profile:
    mu: float
    var: float
    n: float
    tail_p: float
    tail_shift: float
    tail_var: float


def _context(history: History, complexity: str | None, tables: int | None, params: EtaParams) -> _Context:
    """The history as seen by tasks of one complexity and size: kept on a HistoryTable, else made anew."""
    derived = history.derived if isinstance(history, HistoryTable) else None
    if derived is None:
        return _Context(history, complexity, tables, params)
    key = (complexity or UNKNOWN, tables, id(params))
    found = derived.get(key)
    if found is None or found[0] is not params:
        if len(derived) >= 256:  # many task sizes: start over rather than grow
            derived.clear()
        found = derived[key] = (params, _Context(history, complexity, tables, params))
    return found[1]


class _Context:
    """The history as seen by tasks of one complexity and size: profiles, the complexity factor, the
    typical step and each step name's reference (all pure functions of the history, so kept)."""

    def __init__(
        self, history: History, complexity: str | None, tables: int | None, params: EtaParams
    ) -> None:
        self.history = history
        self.params = params
        self.complexity = complexity or UNKNOWN
        self.tables = tables
        self._profiles: dict[tuple[str, str], _Profile | None] = {}
        self._references: dict[str, _Ref] = {}
        self.factor, self.factor_var = self._complexity_factor()

    @cached_property
    def typical(self) -> tuple[float, float, float, int] | None:
        """The typical step here, for step names never seen (computed only when one shows up)."""
        return self._typical()

    def profile(self, key: str, group: str) -> _Profile | None:
        if (key, group) not in self._profiles:
            h = self.history.get((key, group))
            p = self.params
            self._profiles[(key, group)] = (
                _profile(
                    h,
                    p.half_life,
                    p.default_sigma,
                    p.min_sigma,
                    p.tail_prior,
                    p.tail_prior_shift,
                    p.tail_weight,
                )
                if h and h.count > 0
                else None
            )
        return self._profiles[(key, group)]

    def reference(self, key: str) -> _Ref:
        found = self._references.get(key)
        if found is None:
            found = self._references[key] = self._sized(self._reference(key), key)
        return found

    def _sized(self, ref: _Ref, key: str) -> _Ref:
        """The reference for this task's number of tables."""
        slope, scale = self.table_fit(key)
        if not slope or ref.source != "history":
            return ref
        # The class's history mixes tasks with fewer and more tables: the part of its spread that the tables
        # explain is no noise for a task whose tables are known (nor speed: it would inflate tau^2).
        explained = (slope * self.params.class_table_sd.get(self.complexity, 0.0)) ** 2
        var = max(ref.var - explained, 0.5 * ref.var, self.params.min_sigma**2)
        return replace(ref, mu=ref.mu + scale, var=var)

    def _reference(self, key: str) -> _Ref:
        params = self.params
        own = self.profile(key, self.complexity)
        pooled = self.profile(key, ANY)
        shift = self.factor if self.complexity != UNKNOWN else 0.0
        shift_var = self.factor_var if self.complexity != UNKNOWN else 0.0
        if pooled is not None:
            w = own.n / (own.n + params.any_weight) if own is not None else 0.0
            o = own or pooled
            mu = w * o.mu + (1 - w) * (pooled.mu + shift)
            var = w * o.var + (1 - w) * pooled.var
            loc = var * 1.57 / ((own.n if own else 0.0) + (params.any_weight if own else pooled.n))
            tp, ts, tv = (w * a + (1 - w) * b for a, b in zip(_tail(o), _tail(pooled), strict=True))
            # The median's own error: partly the speed of the few tasks behind it (shared by this task's
            # steps), partly their steps' noise (not shared).
            share = params.task_share
            load2 = share * loc + (1 - w) ** 2 * shift_var
            return _Ref(mu, var, math.sqrt(load2), (1 - share) * loc, tp, ts, tv, "history")
        if own is not None:
            loc = own.var * 1.57 / own.n
            share = params.task_share
            return _Ref(own.mu, own.var, math.sqrt(share * loc), (1 - share) * loc, *_tail(own), "history")
        prior_tail = (params.tail_prior, params.tail_prior_shift, 0.3**2)
        if self.typical is not None:
            mu, var, between2, count = self.typical
            return _Ref(mu, var, math.sqrt(between2 / count), between2, *prior_tail, "typical step")
        mu = math.log(params.prior_step_ms * params.complexity_prior.get(self.complexity, 1.0))
        var = params.default_sigma**2
        return _Ref(mu, var, params.prior_scale_sigma, params.prior_kind_sigma**2, *prior_tail, "prior")

    def table_fit(self, key: str) -> tuple[float, float]:
        """How a step grows with tables (log-log slope) and the log factor for this task's number of tables.

        The slope is learned per step name from its medians in the three classes, so a step that does not
        grow gets no correction; (0, 0) when the tables or the history do not tell.
        """
        middle = self.params.class_tables.get(self.complexity)
        if self.tables is None or self.tables <= 0 or middle is None:
            return 0.0, 0.0
        points = []
        for group, typical in self.params.class_tables.items():
            p = self.profile(key, group)
            if p is not None and p.n >= 3:
                points.append((math.log(typical), p.mu, min(p.n, 50.0)))
        if len(points) < 2:
            return 0.0, 0.0
        total = sum(w for _, _, w in points)
        mx = sum(x * w for x, _, w in points) / total
        my = sum(y * w for _, y, w in points) / total
        sxx = sum(w * (x - mx) ** 2 for x, _, w in points)
        slope = sum(w * (x - mx) * (y - my) for x, y, w in points) / sxx if sxx > 0 else 0.0
        slope = max(-0.5, min(1.5, slope))
        return slope, max(-1.0, min(1.0, slope * (math.log(self.tables) - math.log(middle))))

    def task_variance(self, refs: Iterable[_Ref]) -> float:
        """tau^2: the variance of a task's own speed, a share of the typical step's spread."""
        spreads = sorted(r.var for r in refs if r.source == "history")
        base = spreads[len(spreads) // 2] if spreads else self.params.default_sigma**2
        return max(self.params.task_share * base, self.params.min_task_sigma**2)

    def _complexity_factor(self) -> tuple[float, float]:
        """log(duration at this complexity / at any), learned across step names, shrunk to a prior."""
        prior = math.log(self.params.complexity_prior.get(self.complexity, 1.0))
        total, weight = prior * 10.0, 10.0
        for (key, group), h in self.history.items():
            if group != self.complexity or h.count < 3:
                continue
            pooled = self.history.get((key, ANY))
            if pooled is None or pooled.median_ms <= 0 or h.median_ms <= 0:
                continue
            w = min(h.count, 50)
            total += w * math.log(h.median_ms / pooled.median_ms)
            weight += w
        return total / weight, self.params.factor_sigma**2 * 10.0 / weight

    def _typical(self) -> tuple[float, float, float, int] | None:
        """The typical step here (log median, spread, spread between step names, how many names)."""
        mus: list[float] = []
        variances: list[float] = []
        shift = self.factor if self.complexity != UNKNOWN else 0.0
        for (_, group), h in self.history.items():
            if group == ANY and h.count > 0 and h.median_ms > 0:
                mus.append(math.log(h.median_ms) + shift)
                variances.append((math.log(max(h.p90_ms, h.median_ms) / h.median_ms) / _Z90) ** 2)
        if not mus:
            return None
        mus.sort()
        variances.sort()
        if len(mus) >= 3:
            between = (mus[(len(mus) * 9) // 10] - mus[len(mus) // 10]) / (2 * _Z90)
            between2 = max(between**2, 0.3**2)
        else:
            between2 = self.params.prior_kind_sigma**2
        var = max(variances[len(variances) // 2], self.params.min_sigma**2)
        return mus[len(mus) // 2], var, between2, len(mus)


def _tail(p: _Profile) -> tuple[float, float, float]:
    return p.tail_p, p.tail_shift, p.tail_var


@lru_cache(maxsize=4096)
def _profile(
    h: StepHistory,
    half_life: float,
    default_sigma: float,
    min_sigma: float,
    tail_prior: float,
    tail_prior_shift: float,
    tail_weight: float,
) -> _Profile:
    """Location, spread and stall tail of a group in log space, recent samples weighted more."""
    if h.recent:
        n = len(h.recent)
        pairs = sorted(
            (math.log(max(d, 1)), 0.5 ** ((n - 1 - i) / half_life)) for i, d in enumerate(h.recent)
        )
        total = sum(w for _, w in pairs)
        n_eff = total**2 / sum(w * w for _, w in pairs)
        q10, mu, q90 = (_weighted_quantile(pairs, total, q) for q in (0.1, 0.5, 0.9))
        sigma = (q90 - q10) / (2 * _Z90)
        # The tail: samples far beyond the bulk's spread (stalls), counted and measured separately.
        cut = mu + max(2.5 * sigma, math.log(2))
        tail = [(x - mu, w) for x, w in pairs if x > cut]
        tail_w = sum(w for _, w in tail)
        seen = tail_w / total * n_eff
        shift = sum(d * w for d, w in tail) / tail_w if tail_w else 0.0
        spread = sum((d - shift) ** 2 * w for d, w in tail) / tail_w if tail_w else 0.0
    else:
        n_eff = float(h.count)
        mu = math.log(max(h.median_ms, 1.0))
        sigma = math.log(max(h.p90_ms, h.median_ms, 1.0) / max(h.median_ms, 1.0)) / _Z90
        seen = shift = spread = 0.0
    n_eff_tail = n_eff if h.recent else 0.0
    # Few samples say little about the spread or the tail: shrink both towards the defaults.
    k = 3.0
    dof = max(n_eff - 1, 0.0)  # one sample says nothing about the spread
    var = (dof * sigma**2 + k * default_sigma**2) / (dof + k)
    tail_p = (seen + tail_prior * tail_weight) / (n_eff_tail + tail_weight)
    tail_shift = (seen * shift + k * tail_prior_shift) / (seen + k)
    tail_var = max((seen * spread + k * 0.3**2) / (seen + k), 0.05**2)
    return _Profile(mu, max(var, min_sigma**2), max(n_eff, 1.0), tail_p, tail_shift, tail_var)


def _weighted_quantile(pairs: list[tuple[float, float]], total: float, q: float) -> float:
    target = q * total
    acc = 0.0
    for value, w in pairs:
        if acc + w >= target:
            return value
        acc += w
    return pairs[-1][0]


def _pdf(x: float, m: float, v: float) -> float:
    return math.exp(-((x - m) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)


# ---- the task's speed: a two-latent Gaussian ----------------------------------------------------------


class _Latent:
    """Posterior of (s, g): the task's log speed, and the shared error of the references (unit prior)."""

    def __init__(self, tau2: float) -> None:
        # Information form: precision matrix [[a, b], [b, d]] and vector (u, w).
        self.a, self.b, self.d = 1 / max(tau2, 1e-6), 0.0, 1.0
        self.u = self.w = 0.0

    def copy(self) -> _Latent:
        other = _Latent(1.0)
        other.a, other.b, other.d, other.u, other.w = self.a, self.b, self.d, self.u, self.w
        return other

    def observe(self, load: float, y: float, var: float) -> None:
        """One step's log(duration / reference) = s + load * g + noise of `var`."""
        var = max(var, 1e-6)
        self.a += 1 / var
        self.b += load / var
        self.d += load * load / var
        self.u += y / var
        self.w += load * y / var

    @property
    def cov(self) -> tuple[float, float, float]:
        det = self.a * self.d - self.b * self.b
        return self.d / det, -self.b / det, self.a / det

    @property
    def mean(self) -> tuple[float, float]:
        css, csg, cgg = self.cov
        return css * self.u + csg * self.w, csg * self.u + cgg * self.w

    def predict(self, mu: float, load: float, noise: float) -> tuple[float, float]:
        """Predictive log-normal parameters of a step's duration (stalls left out)."""
        ms, mg = self.mean
        css, csg, cgg = self.cov
        return mu + ms + load * mg, noise + css + 2 * load * csg + load * load * cgg


# ---- the running steps: truncated at what has elapsed --------------------------------------------------


@dataclass(frozen=True)
class _Truncated:
    """Moments of a log-normal duration given that it is longer than what has already elapsed."""

    log_mean: float
    log_var: float


def _log_q(x: float) -> float:
    """log P(Z > x) for a standard normal, accurate far into the tail."""
    if x < 5:
        return math.log(max(0.5 * math.erfc(x / math.sqrt(2)), 1e-300))
    return -x * x / 2 - math.log(x) - _LOG_SQRT_2PI + math.log1p(-1 / (x * x) + 3 / x**4)


def _truncated(m: float, v: float, lower: float) -> _Truncated:
    if lower == -math.inf:
        return _Truncated(m, v)
    sd = math.sqrt(max(v, 1e-12))
    a = (lower - m) / sd
    hazard = math.exp(-a * a / 2 - _LOG_SQRT_2PI - _log_q(a))  # phi(a) / Q(a)
    log_var = v * max(1 + a * hazard - hazard * hazard, 1e-4)
    return _Truncated(max(m + sd * hazard, lower), log_var)


def _site(m0: float, v0: float, m1: float, v1: float) -> tuple[float, float] | None:
    """What the rate and the step's survival say about its log duration, as a Gaussian (mean, variance)."""
    precision = 1 / v1 - 1 / v0
    if precision <= 1e-6:
        return None
    return (m1 / v1 - m0 / v0) / precision, 1 / precision


@dataclass(frozen=True)
class _Running:
    """A running step's duration: a bulk and a stall component, each truncated at the elapsed work."""

    elapsed: float
    lower: float  # log of elapsed, -inf when nothing has elapsed
    components: tuple[tuple[float, float, float], ...]  # (weight, log mean, log variance)

    @property
    def bulk_weight(self) -> float:
        return self.components[0][0]

    @classmethod
    def given(cls, m: float, v: float, ref: _Ref, elapsed: float) -> _Running:
        lower = math.log(elapsed) if elapsed > 0 else -math.inf
        parts = [(1 - ref.tail_p, m, v), (ref.tail_p, m + ref.tail_shift, v + ref.tail_var)]
        logs = [
            math.log(max(w, 1e-300)) + (_log_q((lower - mm) / math.sqrt(vv)) if elapsed > 0 else 0.0)
            for w, mm, vv in parts
        ]
        top = max(logs)
        weights = [math.exp(x - top) for x in logs]
        total = sum(weights)
        return cls(
            elapsed,
            lower,
            tuple((w / total, mm, vv) for w, (_, mm, vv) in zip(weights, parts, strict=True)),
        )

    def draws(self, pick: FloatArray, u: FloatArray, z: FloatArray) -> FloatArray:
        """The work this step still needs, a draw per column: a component each (by the uniforms `pick`),
        then a duration above the elapsed (by the uniforms `u`, or the normals `z` when none has elapsed)."""
        (_, m0, v0), (_, m1, v1) = self.components
        out = self._above(m0, v0, u, z)
        stalls = np.flatnonzero(pick >= self.bulk_weight)  # usually a few: only those draw from the tail
        if stalls.size:
            out[stalls] = self._above(m1, v1, u[stalls], z[stalls])
        return np.maximum(out - self.elapsed, 0.0)

    def _above(self, m: float, v: float, u: FloatArray, z: FloatArray) -> FloatArray:
        """Log-normal durations of log mean m and variance v, conditioned on being above the elapsed."""
        sd = math.sqrt(v)
        if self.lower == -math.inf:
            return np.exp(m + sd * z)
        a = (self.lower - m) / sd
        if a > 5:  # far in the tail the excess over a is close to exponential with rate a
            return np.exp(m + sd * (a - np.log1p(-u) / a))
        low = _N.cdf(a)
        return np.exp(m + sd * _inv_cdf(low + (1 - low) * u))


# The standard normal quantile by interpolation in a table of its CDF (made once): one numpy call where a
# rational approximation takes dozens. 1,001 points (z every 0.015) keep the table in the CPU's nearest cache
# (a finer one made every lookup a cache miss), and the error below 0.0002 in z: far below the Monte Carlo's.
_Z_GRID = np.linspace(-7.5, 7.5, 1_001)
_CDF_GRID = np.array([0.5 * math.erfc(-z / math.sqrt(2)) for z in _Z_GRID])


def _inv_cdf(p: FloatArray) -> FloatArray:
    """The standard normal quantile of each p in [0, 1], held within the table's +-7.5."""
    out: FloatArray = np.interp(p, _CDF_GRID, _Z_GRID)
    return out


@dataclass(frozen=True)
class _Pending:
    mu: float
    load: float
    sd: float
    tail_p: float
    tail_shift: float
    tail_var: float


def _simulate(
    latent: _Latent, running: list[_Running], pending: list[_Pending], params: EtaParams
) -> FloatArray:
    """Sorted draws of the remaining work: Monte Carlo over the task's speed, step noise and stalls."""
    n = max(params.draws, 1)
    z, u = _noise(n, 2 + 2 * len(running) + 2 * len(pending))
    ms, mg = latent.mean
    css, csg, cgg = latent.cov
    l11 = math.sqrt(max(css, 0.0))
    l21 = csg / l11 if l11 > 0 else 0.0
    l22 = math.sqrt(max(cgg - l21 * l21, 0.0))
    s, g = ms + l11 * z[0], mg + l21 * z[0] + l22 * z[1]  # the task's speed and the references' shared error
    total = np.zeros(n)
    row = 2
    for step in running:
        total += step.draws(u[row], u[row + 1], z[row + 1])
        row += 2
    if pending:  # every pending step at once, a row each
        mu, load, sd, tail_p, shift, tail_sd = np.array(
            [(p.mu, p.load, p.sd, p.tail_p, p.tail_shift, math.sqrt(p.tail_var)) for p in pending]
        ).T[..., None]
        k = len(pending)
        x = mu + s + load * g + sd * z[row : row + k]
        x += (u[row : row + k] < tail_p) * (shift + tail_sd * z[row + k : row + 2 * k])
        total += np.exp(x).sum(axis=0)
    total.sort()
    return total


# Every estimate draws from one fixed table of standard normals and uniforms (common random numbers): an
# estimate stays a pure function of its inputs, and no generator is seeded or run per estimate. The table
# comes in blocks of rows, each block from its own seed, made when first needed.
_BLOCK_ROWS = 64


def _noise(n: int, rows: int) -> tuple[FloatArray, FloatArray]:
    """At least `rows` rows of n standard normals, and as many of n uniforms in [0, 1)."""
    blocks = max(1, -(-rows // _BLOCK_ROWS))
    found = _tables.get(n)
    if found is None or len(found[0]) < blocks * _BLOCK_ROWS:
        # The largest table asked for so far, kept whole: blocks are made by their own seeds, so a longer
        # table starts with the same rows as a shorter one.
        made = [_noise_block(n, b) for b in range(blocks)]
        found = _tables[n] = (
            _frozen(np.concatenate([z for z, _ in made])),
            _frozen(np.concatenate([u for _, u in made])),
        )
    return found


_tables: dict[int, tuple[FloatArray, FloatArray]] = {}


def _noise_block(n: int, block: int) -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng((20240115, n, block))
    # A Latin hypercube: each row holds one draw from each of n equally likely slices of [0, 1), in an order
    # of its own, so every row covers its whole distribution evenly (no row is high or low by luck, which a
    # table shared by every estimate would turn into a bias) while rows stay independent of one another.
    ranks = rng.permuted(np.tile(np.arange(n), (2 * _BLOCK_ROWS, 1)), axis=1)
    strata = np.minimum((ranks + rng.random((2 * _BLOCK_ROWS, n))) / n, _BELOW_ONE)  # never rounds up to 1
    return _inv_cdf(strata[_BLOCK_ROWS:]), strata[:_BLOCK_ROWS]


_BELOW_ONE = float(np.nextafter(1.0, 0.0))


def _frozen(table: FloatArray) -> FloatArray:
    table.flags.writeable = False  # shared by every estimate
    return table


def _share_within(ordered: FloatArray, eta: float, band: float) -> float:
    """The share of the sorted outcomes x with |eta - x| <= band * x, that is eta / (1 + band) <= x <= eta /
    (1 - band): two binary searches instead of a pass over every draw."""
    top = eta / (1 - band) if band < 1 else math.inf
    inside = np.searchsorted(ordered, top, "right") - np.searchsorted(ordered, eta / (1 + band), "left")
    return float(inside) / len(ordered)


def _quantile(ordered: FloatArray, q: float) -> float:
    return float(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))])
