"""Time estimates: how long a task still needs, with an 80% interval, learned from the history of its steps.

The model, in log space (durations are skewed, so logs are roughly normal):

    log D_step = mu_step + s + [prior] g + e_step

`mu_step` is the step's reference duration: the recent median of finished steps with the same normalised
name and complexity class, else of the same name at any complexity times a learned complexity factor, else
the typical step of this installation, else a fixed prior. `s` is the task's own speed (some tasks run
uniformly slower or faster), `g` the unknown scale of the fixed prior (only when there is no history), and
`e_step` the step's own run-to-run noise. The task's finished steps are observations of `s` and `g`; the
running step adds its observed rate (percent and substeps over work time) and the fact that it has not
finished yet, weighted by how far it is. Remaining steps are predicted from the updated `s` and `g`, and
the sum is fitted with a log-normal whose 10th and 90th percentiles give the interval.

Pure: no I/O and no clock; `now` is a parameter. Paused and approval-waiting time is not work.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist
from typing import Any, Literal

Confidence = Literal["low", "medium", "high"]
ANY = "any"
UNKNOWN = "unknown"  # what step_stats records for a task without a complexity
_N = NormalDist()
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class StepHistory:
    """Finished durations of one (normalised step name, complexity) group, as a step_stats row holds them."""

    count: int
    median_ms: float
    p90_ms: float
    recent: tuple[int, ...] = ()  # oldest first, as step_stats keeps them


History = Mapping[tuple[str, str], StepHistory]


@dataclass(frozen=True)
class EtaParams:
    """The estimator's assumptions; the defaults are what `bench/eta.py` reports on."""

    coverage: float = 0.8  # the interval's target coverage
    prior_step_ms: float = 60_000.0  # a step's duration when nothing at all is known
    prior_scale_sigma: float = 1.2  # how unsure that absolute scale is (log sd, shared by the task's steps)
    prior_kind_sigma: float = 0.7  # how much step kinds differ from one another (log sd)
    default_sigma: float = 0.45  # a step's spread before its history says otherwise (log sd)
    min_sigma: float = 0.08
    task_share: float = 0.4  # share of a step's spread that is the task's own speed, shared by its steps
    rate_kappa: float = 0.25  # noise of the rate: var(log duration from rate) = kappa (1 - p) / p
    half_life: float = 100.0  # recent samples count half as much this many samples ago (speeds drift)
    any_weight: float = 2.0  # pseudo-count of the any-complexity group when a complexity group is small
    stall_factor: float = 2.0  # no progress for this many times the step's p90 is a stall
    stall_min_ms: float = 5_000.0
    complexity_prior: Mapping[str, float] = field(
        default_factory=lambda: {"simple": 0.8, "medium": 1.0, "complex": 1.3}
    )


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


def normalise_step_name(name: str) -> str:
    """The step_stats grouping key: lower case, digits and punctuation dropped, single spaces.

    The same rule as `projections.model.normalise_step_name`, repeated because the domain imports nothing
    above it; a unit test pins that the two agree.
    """
    return " ".join(re.sub(r"[^a-z ]+", " ", name.lower()).split())


def history_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], StepHistory]:
    """step_stats rows (`recent` as JSON text or a list, or missing) as the estimator's history."""
    out: dict[tuple[str, str], StepHistory] = {}
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
    ctx = _Context(history, view.get("complexity"), params)
    view_at = _parse(view["updated_at"]) or now
    gap_ms = max(0.0, (now - view_at).total_seconds() * 1000) if status == "running" else 0.0
    steps = [s for s in view["steps"] if s["status"] != "skipped"]
    refs = {s["order"]: ctx.reference(normalise_step_name(s["name"])) for s in steps}
    tau2 = ctx.task_variance(refs.values())

    latent = _Latent(tau2, params.prior_scale_sigma**2)
    finished = 0
    for s in steps:
        if s["status"] == "completed" and s.get("duration_ms") is not None:
            ref = refs[s["order"]]
            y = math.log(max(float(s["duration_ms"]), 1.0)) - ref.mu
            latent.observe(ref.shared, max(-3.0, min(3.0, y)), ref.noise(tau2, params.task_share))
            finished += 1
    before = latent.copy()  # finished steps only: the running steps are predicted from this

    remaining = _Sum()
    stalled: int | None = None
    observed: list[str] = []
    for s in steps:
        if s["status"] not in ("running", "paused", "approval"):
            continue
        ref = refs[s["order"]]
        clock = s["status"] == "running" and status == "running"
        elapsed = float(s.get("work_ms") or 0) + (gap_ms if clock else 0.0)
        quiet_since = _parse(s.get("updated_at")) or view_at
        quiet = max(0.0, (now - quiet_since).total_seconds() * 1000) if clock else 0.0
        worked_then = max(0.0, elapsed - quiet)
        p = _fraction(s)
        m0, v0 = before.predict(ref.mu, ref.shared, ref.noise(tau2, params.task_share))
        p90 = math.exp(m0 + _N.inv_cdf(0.9) * math.sqrt(v0))
        if clock and quiet > max(params.stall_factor * p90, params.stall_min_ms):
            stalled = stalled or s["order"]
        m1, v1 = m0, v0
        if 0 < p < 1 and worked_then > 0:
            r2 = max(params.rate_kappa * (1 - p) / p, 1e-3)
            rate_mu = math.log(worked_then / p)
            m1, v1 = (m0 * r2 + rate_mu * v0) / (v0 + r2), v0 * r2 / (v0 + r2)
            observed.append(f"step {s['order']} at {p:.0%}")
        cur = _truncated(m1, v1, math.log(elapsed) if elapsed > 0 else -math.inf)
        remaining.add_independent(max(cur.mean - elapsed, 0.0), cur.var)
        if stalled != s["order"]:
            site = _site(m0, v0, cur.log_mean, cur.log_var)
            if site is not None:
                z, site_var = site
                latent.observe(ref.shared, z - ref.mu, ref.noise(tau2, params.task_share) + site_var)

    for s in steps:
        if s["status"] == "pending":
            ref = refs[s["order"]]
            m, v = latent.predict(ref.mu, ref.shared, ref.noise(tau2, params.task_share))
            remaining.add_correlated(m, v, ref.shared)

    low_ms, mid_ms, high_ms = remaining.quantiles(latent, params.coverage)
    if stalled is not None:
        # A stalled step may take as long again as it has already: widen upwards rather than pretend.
        high_ms = max(high_ms, mid_ms * 2)
    eta = max(1, round(mid_ms / 1000))
    low = min(eta, max(0, math.floor(low_ms / 1000)))
    high = max(eta, math.ceil(high_ms / 1000))
    sources = sorted({refs[s["order"]].source for s in steps if s["status"] != "completed"})
    confidence = _confidence(low, eta, high, stalled is not None, sources == ["prior"] and finished == 0)
    attention = stalled is not None or any(s["status"] == "approval" for s in steps)
    basis = "; ".join(
        [
            "+".join(sources) if sources else "history",
            f"speed x{math.exp(latent.mean[0]):.2f} from {finished} finished step(s)",
            *observed,
            *([f"step {stalled} stalled"] if stalled is not None else []),
            *(["paused: the clock is stopped"] if status == "paused" else []),
        ]
    )
    return Estimate(eta, low, high, confidence, attention, basis, stalled)


def _confidence(low: int, eta: int, high: int, stalled: bool, prior_only: bool) -> Confidence:
    if stalled or prior_only:
        return "low"
    width = (high - low) / max(eta, 1)
    if width <= 0.5:
        return "high"
    if width <= 1.2:
        return "medium"
    return "low"


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
    """A step's reference: log-ms location, its total spread, whether it rests on the fixed prior."""

    mu: float
    var: float  # spread of the population of such steps, plus the uncertainty of mu itself
    shared: bool  # True when mu is the fixed prior, whose unknown scale all such steps share
    source: str
    own_var: float = 0.0  # part of var that is never the task's speed (step kind unknown, location error)

    def noise(self, tau2: float, share: float) -> float:
        """The step's own variance once the task's speed is accounted for (never less than its share)."""
        spread = self.var - self.own_var
        return max(spread - tau2, (1 - share) * spread) + self.own_var


@dataclass(frozen=True)
class _Profile:
    mu: float
    sigma2: float
    n: float


class _Context:
    """Per-call view of the history: profiles, the complexity factor and the typical step."""

    def __init__(self, history: History, complexity: str | None, params: EtaParams) -> None:
        self.history = history
        self.params = params
        self.complexity = complexity or UNKNOWN
        self._profiles: dict[tuple[str, str], _Profile | None] = {}
        prior = params.complexity_prior.get(self.complexity, 1.0)
        self.factor = self._complexity_factor(math.log(prior))
        self.typical = self._typical()

    def profile(self, key: str, group: str) -> _Profile | None:
        if (key, group) not in self._profiles:
            h = self.history.get((key, group))
            self._profiles[(key, group)] = _profile(h, self.params) if h and h.count > 0 else None
        return self._profiles[(key, group)]

    def reference(self, key: str) -> _Ref:
        own = self.profile(key, self.complexity)
        pooled = self.profile(key, ANY)
        if pooled is not None and self.complexity != UNKNOWN:
            pooled = _Profile(pooled.mu + self.factor, pooled.sigma2, pooled.n)
        if own is not None and pooled is not None:
            w = own.n / (own.n + self.params.any_weight)
            mu = w * own.mu + (1 - w) * pooled.mu
            var = w * own.sigma2 + (1 - w) * pooled.sigma2
            loc = var * 1.57 / (own.n + self.params.any_weight)
            return _Ref(mu, var + loc, False, "history", loc)
        if own is not None or pooled is not None:
            p = own or pooled
            assert p is not None
            loc = p.sigma2 * 1.57 / p.n
            return _Ref(p.mu, p.sigma2 + loc, False, "history", loc)
        if self.typical is not None:
            mu, sigma2, between2 = self.typical
            return _Ref(mu, sigma2 + between2, False, "typical step", between2)
        params = self.params
        mu = math.log(params.prior_step_ms * params.complexity_prior.get(self.complexity, 1.0))
        kind2 = params.prior_kind_sigma**2
        return _Ref(mu, params.default_sigma**2 + kind2, True, "prior", kind2)

    def task_variance(self, refs: Iterable[_Ref]) -> float:
        """tau^2: the variance of a task's own speed, a share of the typical step's spread."""
        spreads = sorted(r.var - r.own_var for r in refs if not r.shared and r.var > r.own_var)
        base = spreads[len(spreads) // 2] if spreads else self.params.default_sigma**2
        return self.params.task_share * base

    def _complexity_factor(self, prior: float) -> float:
        """log(duration at this complexity / at any), learned across step names, shrunk to a prior."""
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
        return total / weight

    def _typical(self) -> tuple[float, float, float] | None:
        """The typical step here (log median, spread, spread between step names), for names never seen."""
        mus: list[float] = []
        sigmas: list[float] = []
        for (key, group), h in self.history.items():
            if group != ANY or h.count <= 0:
                continue
            p = self.profile(key, ANY)
            assert p is not None
            mus.append(p.mu + self.factor)
            sigmas.append(p.sigma2)
        if not mus:
            return None
        mus.sort()
        sigmas.sort()
        mid = mus[len(mus) // 2]
        if len(mus) >= 3:
            between = (mus[(len(mus) * 9) // 10] - mus[len(mus) // 10]) / (2 * _N.inv_cdf(0.9))
            between2 = max(between**2, 0.3**2)
        else:
            between2 = self.params.prior_kind_sigma**2
        return mid, sigmas[len(sigmas) // 2], between2


def _profile(h: StepHistory, params: EtaParams) -> _Profile:
    """Location and spread of a group in log space, recent samples weighted more (speeds drift)."""
    z90 = _N.inv_cdf(0.9)
    if h.recent:
        n = len(h.recent)
        pairs = sorted(
            (math.log(max(d, 1)), 0.5 ** ((n - 1 - i) / params.half_life)) for i, d in enumerate(h.recent)
        )
        total = sum(w for _, w in pairs)
        n_eff = total**2 / sum(w * w for _, w in pairs)
        q10, q50, q90 = (_weighted_quantile(pairs, total, q) for q in (0.1, 0.5, 0.9))
        sigma = (q90 - q10) / (2 * z90)
        mu = q50
    else:
        n_eff = float(h.count)
        mu = math.log(max(h.median_ms, 1.0))
        sigma = math.log(max(h.p90_ms, h.median_ms, 1.0) / max(h.median_ms, 1.0)) / z90
    # Few samples say little about the spread: shrink it towards the default.
    k = 3.0
    sigma2 = (n_eff * sigma**2 + k * params.default_sigma**2) / (n_eff + k)
    return _Profile(mu, max(sigma2, params.min_sigma**2), max(n_eff, 1.0))


def _weighted_quantile(pairs: list[tuple[float, float]], total: float, q: float) -> float:
    target = q * total
    acc = 0.0
    for value, w in pairs:
        if acc + w >= target:
            return value
        acc += w
    return pairs[-1][0]


# ---- the task's speed: a two-latent Gaussian ----------------------------------------------------------


class _Latent:
    """Posterior of (s, g): the task's log speed and the fixed prior's unknown log scale."""

    def __init__(self, tau2: float, g2: float) -> None:
        # Information form: precision matrix [[a, b], [b, d]] and vector (u, w).
        self.a, self.b, self.d = 1 / tau2 if tau2 > 0 else 1e9, 0.0, 1 / g2
        self.u = self.w = 0.0

    def copy(self) -> _Latent:
        other = _Latent(1.0, 1.0)
        other.a, other.b, other.d, other.u, other.w = self.a, self.b, self.d, self.u, self.w
        return other

    def observe(self, shared: bool, y: float, var: float) -> None:
        """One step's log(duration / reference) = s (+ g when it rests on the prior) + noise of `var`."""
        var = max(var, 1e-6)
        self.a += 1 / var
        self.u += y / var
        if shared:
            self.b += 1 / var
            self.d += 1 / var
            self.w += y / var

    @property
    def cov(self) -> tuple[float, float, float]:
        det = self.a * self.d - self.b * self.b
        return self.d / det, -self.b / det, self.a / det

    @property
    def mean(self) -> tuple[float, float]:
        css, csg, cgg = self.cov
        return css * self.u + csg * self.w, csg * self.u + cgg * self.w

    def share(self, shared: bool) -> float:
        """Variance of the latent part of a step's log duration (what its steps have in common)."""
        css, csg, cgg = self.cov
        return css + 2 * csg + cgg if shared else css

    def predict(self, mu: float, shared: bool, noise: float) -> tuple[float, float]:
        """Predictive log-normal parameters of a step's duration."""
        ms, mg = self.mean
        return mu + ms + (mg if shared else 0.0), noise + self.share(shared)


@dataclass(frozen=True)
class _Truncated:
    """Moments of a log-normal duration given that it is longer than what has already elapsed."""

    mean: float
    var: float
    log_mean: float
    log_var: float


def _log_q(x: float) -> float:
    """log P(Z > x) for a standard normal, accurate far into the tail."""
    if x < 5:
        return math.log(max(0.5 * math.erfc(x / math.sqrt(2)), 1e-300))
    return -x * x / 2 - math.log(x) - _LOG_SQRT_2PI + math.log1p(-1 / (x * x) + 3 / x**4)


def _truncated(m: float, v: float, lower: float) -> _Truncated:
    sd = math.sqrt(max(v, 1e-12))
    if lower == -math.inf:
        mean = math.exp(m + v / 2)
        return _Truncated(mean, mean * mean * math.expm1(v), m, v)
    a = (lower - m) / sd
    lq = _log_q(a)
    hazard = math.exp(-a * a / 2 - _LOG_SQRT_2PI - lq)  # phi(a) / Q(a)
    log_mean = m + sd * hazard
    log_var = v * max(1 + a * hazard - hazard * hazard, 1e-4)
    mean = math.exp(m + v / 2 + _log_q(a - sd) - lq)
    second = math.exp(2 * m + 2 * v + _log_q(a - 2 * sd) - lq)
    floor = math.exp(lower)
    mean = max(mean, floor)
    return _Truncated(mean, max(second - mean * mean, 0.0), max(log_mean, lower), log_var)


def _site(m0: float, v0: float, m1: float, v1: float) -> tuple[float, float] | None:
    """What the rate and the step's survival say about its log duration, as a Gaussian (mean, variance)."""
    precision = 1 / v1 - 1 / v0
    if precision <= 1e-6:
        return None
    return (m1 / v1 - m0 / v0) / precision, 1 / precision


class _Sum:
    """Moments of the remaining time: steps predicted from the same latent speed are correlated."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self._correlated: list[tuple[float, float, bool]] = []  # (mean, variance of the log, shared)

    def add_independent(self, mean: float, var: float) -> None:
        self.mean += mean
        self.var += var

    def add_correlated(self, m: float, v: float, shared: bool) -> None:
        self._correlated.append((math.exp(m + v / 2), v, shared))

    def quantiles(self, latent: _Latent, coverage: float) -> tuple[float, float, float]:
        """Median and central interval of a log-normal with the sum's mean and variance."""
        css, csg, cgg = latent.cov
        mean, var = self.mean, self.var
        for i, (ei, vi, si) in enumerate(self._correlated):
            mean += ei
            var += ei * ei * math.expm1(vi)
            for ej, _, sj in self._correlated[i + 1 :]:
                cov_log = css + (csg if si else 0.0) + (csg if sj else 0.0) + (cgg if si and sj else 0.0)
                var += 2 * ei * ej * math.expm1(cov_log)
        if mean <= 0:
            return 0.0, 0.0, 0.0
        s2 = math.log1p(max(var, 0.0) / (mean * mean))
        mu = math.log(mean) - s2 / 2
        z = _N.inv_cdf(0.5 + coverage / 2) * math.sqrt(s2)
        return math.exp(mu - z), math.exp(mu), math.exp(mu + z)
