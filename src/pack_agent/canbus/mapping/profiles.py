"""What a database says of each signal, scored against each metric's profile.

Names are matched on word parts, so ``BMS_SOH``, ``LB_Capacity_Deterioration_Rate``
and ``StateOfHealth`` all split into comparable words; units, ranges, value tables
and cycle times add or take away. Confidence is a rough 0-1 score, not a probability.
The profiles themselves (data) are in ``metrics``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.mapping.metrics import CODE_WORDS, PROFILES, Profile

if TYPE_CHECKING:
    import cantools.database


PROPOSE_AT = 0.4  # below this score a candidate is listed, never written into the starter


@dataclass
class Candidate:
    """One signal scored against one metric, with the reasons for and against."""

    metric: str
    message: str
    signal: str
    frame_id: int
    score: float
    reasons: list[str] = field(default_factory=list)
    contradiction: str | None = None  # what the log showed against it
    seen: int = 0  # frames of its message in the log

    @property
    def proposed(self) -> bool:
        return self.contradiction is None and self.score >= PROPOSE_AT


@dataclass
class CodeCandidate:
    """A multiplexed message that may carry the 24-character pack code in text pages."""

    message: str
    mux_signal: str
    pages: list[str]
    score: float
    reasons: list[str] = field(default_factory=list)
    contradiction: str | None = None
    text: str | None = None  # the code read from the log, when it had every page

    @property
    def proposed(self) -> bool:
        return self.contradiction is None and self.score >= PROPOSE_AT


@dataclass
class Proposal:
    """Every metric's candidates, best first, and the pack code's."""

    candidates: dict[str, list[Candidate]]
    code: list[CodeCandidate]
    log_frames: int | None = None

    def best(self, metric: str) -> Candidate | None:
        return next((c for c in self.candidates.get(metric, []) if c.proposed), None)

    def best_code(self) -> CodeCandidate | None:
        return next((c for c in self.code if c.proposed), None)


def words(name: str) -> list[str]:
    """``LB_Capacity_Deterioration_Rate`` -> lb, capacity, deterioration, rate, and the
    parts joined (``lbcapacitydeteriorationrate``), so ``StateOfHealth`` matches
    ``stateofhealth``; digits split off (``BattVoltage132`` -> batt, voltage, 132)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    spaced = re.sub(r"([A-Za-z])([0-9])|([0-9])([A-Za-z])", r"\1\3 \2\4", spaced)
    parts = [p.lower() for p in re.split(r"[^A-Za-z0-9]+", spaced) if p]
    return [*parts, "".join(parts), "".join(p for p in parts if not p.isdigit())]


def _says(word: str, parts: list[str]) -> bool:
    """A whole part, or (for a long compound like ``battcurrent``) inside the joined name."""
    return word in parts or (len(word) >= 7 and bool(parts) and word in parts[-1])


def _avoids(word: str, parts: list[str]) -> bool:
    """An avoided part: whole, or inside the name when long or with digits (``12v`` in
    ``v12vBattCurrent``)."""
    joined = parts[-2] if len(parts) >= 2 else ""
    return word in parts or ((len(word) >= 5 or any(c.isdigit() for c in word)) and word in joined)


def _score(profile: Profile, message: Any, signal: Any) -> tuple[float, list[str]]:
    sig_words = words(signal.name)
    msg_words = words(message.name)
    comment_words = words(signal.comment or "")
    reasons: list[str] = []
    score = 0.0
    strong = [w for w in profile.words if _says(w, sig_words)]
    said = [w for w in profile.words if _says(w, comment_words)]
    weak = [w for w in profile.weak_words if w in sig_words]
    if strong:
        score += 0.5
        reasons.append(f"name says {strong[0]!r}")
    elif said:
        score += 0.35
        reasons.append(f"comment says {said[0]!r}")
    elif weak:
        score += 0.15
        reasons.append(f"name has {weak[0]!r}")
    elif any(w in msg_words for w in profile.words):
        score += 0.1
        reasons.append(f"message name says {next(w for w in profile.words if w in msg_words)!r}")
    else:
        return 0.0, []
    bad = [w for w in profile.avoid if _avoids(w, sig_words) or _avoids(w, msg_words)]
    if bad:
        score -= 0.45
        reasons.append(f"but the name also says {bad[0]!r}")
    unit = (signal.unit or "").strip().lower()
    if profile.units:
        if unit in profile.units:
            score += 0.2
            reasons.append(f"unit {signal.unit!r}")
        elif unit:
            score -= 0.2
            reasons.append(f"unit {signal.unit!r} is not {'/'.join(profile.units)}")
    lo, hi = _range(signal)
    if profile.low is not None and profile.high is not None and lo is not None and hi is not None:
        if hi < profile.low or lo > profile.high:
            score -= 0.3
            reasons.append(f"range [{lo:g}|{hi:g}] lies outside {profile.low:g}..{profile.high:g}")
        elif lo == hi == 0:
            reasons.append("range [0|0] says nothing")
        elif profile.units == ("%",) and hi < 0.5 * profile.high:
            score -= 0.3
            reasons.append(f"range ends at {hi:g}: a percentage reaches 100")
        else:
            score += 0.1
            reasons.append(f"range [{lo:g}|{hi:g}] fits")
    if profile.max_distinct is not None:
        if signal.choices:
            score += 0.1
            labels = ", ".join(f"{k}={v}" for k, v in list(signal.choices.items())[:5])
            reasons.append(f"value table ({labels})")
        elif signal.length > 8:
            score -= 0.2
            reasons.append(f"{signal.length} bits is wide for a state")
    cycle = getattr(message, "cycle_time", None)
    if cycle:
        reasons.append(f"every {cycle} ms")
    return round(max(0.0, min(1.0, score)), 2), reasons


def _range(signal: Any) -> tuple[float | None, float | None]:
    if signal.minimum is not None and signal.maximum is not None:
        return float(signal.minimum), float(signal.maximum)
    if signal.length <= 32 and not signal.is_float:
        raw_hi = (1 << (signal.length - (1 if signal.is_signed else 0))) - 1
        raw_lo = -(raw_hi + 1) if signal.is_signed else 0
        ends = (raw_lo * signal.scale + signal.offset, raw_hi * signal.scale + signal.offset)
        return float(min(ends)), float(max(ends))
    return None, None


def propose(db: cantools.database.Database) -> Proposal:
    """Candidates for every metric from the database alone, best first."""
    candidates: dict[str, list[Candidate]] = {p.metric: [] for p in PROFILES}
    for message in db.messages:
        for signal in message.signals:
            for profile in PROFILES:
                score, reasons = _score(profile, message, signal)
                if score > 0:
                    candidates[profile.metric].append(
                        Candidate(
                            profile.metric,
                            message.name,
                            signal.name,
                            message.frame_id,
                            score,
                            reasons,
                        )
                    )
    for found in candidates.values():
        found.sort(key=lambda c: (-c.score, c.message, c.signal))
    return Proposal(candidates, _code_candidates(db))


def _code_candidates(db: cantools.database.Database) -> list[CodeCandidate]:
    """Multiplexed messages whose pages are one whole-byte text signal each."""
    out: list[CodeCandidate] = []
    for message in db.messages:
        if not message.is_multiplexed():
            continue
        muxes = [s for s in message.signals if s.is_multiplexer]
        if len(muxes) != 1:
            continue
        pages: dict[int, Any] = {}
        for s in message.signals:
            ids = s.multiplexer_ids or []
            if (
                len(ids) == 1
                and s.length in (40, 48, 56)
                and s.start % 8 in (0, 7)
                and s.scale == 1
            ):
                pages.setdefault(ids[0], s)
        if len(pages) < 3:
            continue
        ordered = [pages[k] for k in sorted(pages)]
        chars = sum(s.length // 8 for s in ordered)
        reasons = [f"multiplexed by {muxes[0].name}: {len(ordered)} text pages, {chars} characters"]
        score = 0.3
        name_words = words(message.name) + [w for s in ordered for w in words(s.name)]
        if any(w in name_words for w in CODE_WORDS):
            score += 0.3
            reasons.append("name says code or serial")
        if "vin" in name_words:
            score -= 0.4
            reasons.append("but the name says VIN: the vehicle's identity, not the pack's")
        if chars >= 24:
            score += 0.2
            reasons.append("enough characters for a 24-character GB/T 34014 code")
        else:
            score -= 0.3
            reasons.append("fewer than 24 characters")
        out.append(
            CodeCandidate(
                message.name,
                muxes[0].name,
                [s.name for s in ordered],
                round(max(0.0, min(1.0, score)), 2),
                reasons,
            )
        )
    out.sort(key=lambda c: -c.score)
    return out
