"""Results of a benchmark run and their rendering as BENCHMARKS.md."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

__all__ = ["Kept", "Measurement", "Ratio", "Report", "Section", "Target", "fmt", "median", "percentile", "ratio"]

_NUMBER = re.compile(r"(\d+)([a-z]?)\.\s")
Number = tuple[int, str]  # a section's place, from its title: "3b. SSE fan-out ..." -> (3, "b")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "x":
        return f"{value:.2f}x"
    if not unit and float(value).is_integer():
        return f"{int(value)}"
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{text} {unit}".rstrip()


@dataclass
class Measurement:
    """One figure measured once per run; the report shows the median and every run."""

    label: str
    unit: str
    runs: list[float] = field(default_factory=list)
    command: str = ""
    note: str = ""

    @property
    def median(self) -> float | None:
        return median(self.runs)


def ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    """a's median over b's, None when either is missing."""
    if a is None or b is None or a.median is None or b.median is None or b.median == 0:
        return None
    return a.median / b.median


@dataclass
class Ratio:
    label: str
    value: float | None
    note: str = ""


@dataclass
class Target:
    """A goal: `value` compared to `limit` with `op` ("<=", ">=", "<")."""

    text: str
    value: float | None
    limit: float
    op: str
    unit: str = ""
    why_unmeasured: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "not measured"
        ok = {
            "<=": self.value <= self.limit,
            "<": self.value < self.limit,
            ">=": self.value >= self.limit,
            ">": self.value > self.limit,
        }[self.op]
        return "met" if ok else "missed"


@dataclass
class Section:
    key: str
    title: str
    method: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
    seconds: float = 0.0

    def measure(self, label: str, unit: str, command: str = "", note: str = "") -> Measurement:
        m = Measurement(label, unit, command=command, note=note)
        self.measurements.append(m)
        return m

    def find(self, label: str) -> Measurement | None:
        return next((m for m in self.measurements if m.label == label), None)


def section_number(title: str) -> Number | None:
    m = _NUMBER.match(title)
    return (int(m[1]), m[2]) if m else None


@dataclass
class Kept:
    """What `--update` keeps of an earlier report: its header, and the sections (with their rows of the
    Targets table) of the scenarios not run again, as they were written."""

    header: list[str] = field(default_factory=list)
    sections: dict[Number, list[str]] = field(default_factory=dict)
    targets: dict[Number, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Kept:
        kept = cls()
        blocks: list[list[str]] = [[]]  # the lines before the first "## " heading, then one per heading
        for line in text.splitlines():
            if line.startswith("## "):
                blocks.append([])
            blocks[-1].append(line)
        intro = blocks[0]
        start = next((i + 1 for i, line in enumerate(intro) if line.startswith("Benchmarks are not tests")), 0)
        kept.header = intro[start:]
        for block in blocks[1:]:
            heading = block[0][3:]
            if heading == "Targets":
                for row in block:
                    if (number := section_number(row[2:])) is not None and row.startswith("| "):
                        kept.targets.setdefault(number, []).append(row)
            elif (number := section_number(heading)) is not None:
                kept.sections[number] = block
        return kept


@dataclass
class Report:
    command: str
    started: str
    runs: int
    quick: bool
    revision: str
    machine: dict[str, str]
    versions: dict[str, str]
    settings: dict[str, str]
    sections: list[Section] = field(default_factory=list)
    preamble: list[str] = field(default_factory=list)
    total_seconds: float = 0.0
    scenarios: list[str] = field(default_factory=list)  # every scenario the harness knows, by name
    kept: Kept | None = None  # --update: what stays of the earlier report

    def _header(self) -> list[str]:
        if self.kept is None:
            return [
                f"- command: `{self.command}`",
                f"- started: {self.started}, took {self.total_seconds:.0f} s",
                f"- runs per figure: {self.runs}{' (`--quick`: one run, smaller files)' if self.quick else ''}",
                f"- code measured: {self.revision}",
            ]
        header = "\n".join(self.kept.header).strip().splitlines()
        numbers = [s.title.split(" ", 1)[0].rstrip(".") for s in self.sections]
        which = f"section{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}"
        return [
            *header,
            f"- updated: {which} by `{self.command}`, started {self.started}, took "
            f"{self.total_seconds:.0f} s, {self.runs} run(s) per figure, code measured: {self.revision}",
        ]

    def _merged(self, new: dict[Number, list[str]], kept: dict[Number, list[str]]) -> list[str]:
        """Lines of the sections run now and of those kept, in the order of their numbers."""
        return [line for _, lines in sorted({**kept, **new}.items()) for line in lines]

    def render(self) -> str:
        out = ["# Benchmarks", ""]
        out += [
            "Written by `make bench` (`.venv/bin/python -m bench.run`); do not edit by hand.",
            "Timings are wall-clock, the figure is the median of the runs, and every run is listed.",
            "Benchmarks are not tests: nothing here fails a build.",
            "",
            *self._header(),
            "",
        ]
        out += self.preamble
        out += [
            "## How to run",
            "",
            "```",
            "make bench                                   # installs .[dev,bench], then the line below",
            ".venv/bin/python -m bench.run                # every scenario, 3 runs each, writes BENCHMARKS.md",
            ".venv/bin/python -m bench.run --quick        # 1 run, smaller files",
            ".venv/bin/python -m bench.run --only segmented,memory --runs 5 --out /tmp/b.md",
            ".venv/bin/python -m bench.run --only fleet --update   # re-run one scenario, keep the other sections",
            "```",
            "",
            f"Scenarios: {', '.join(f'`{name}`' for name in self.scenarios)}. nginx and aria2c come from the "
            "system (`apt-get install -y nginx-light aria2`, done by the harness when missing and running as root); "
            "everything listens on 127.0.0.1 on free ports, and every process the harness starts is stopped "
            "by PID when it ends.",
            "",
        ]
        skipped = [s for s in self.sections if s.skipped]
        if skipped:
            out += ["## Not measured", ""] + [f"- {s.title}: {s.skipped}" for s in skipped] + [""]
        out += ["## Machine", "", "| | |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in self.machine.items()]
        out += ["", "## Tools", "", "| tool | version |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in self.versions.items()]
        out += ["", "Hive settings in effect unless a scenario says otherwise:", ""]
        out += [f"- `{k}` = `{v}`" for k, v in self.settings.items()]
        out += ["", "## Targets", "", "| scenario | target | measured | result |", "| --- | --- | --- | --- |"]
        rows: dict[Number, list[str]] = {}
        texts: dict[Number, list[str]] = {}
        for i, section in enumerate(self.sections):
            number = section_number(section.title) or (10**6 + i, "")
            texts[number] = self._section(section)
            rows[number] = []
            for t in section.targets:
                measured = fmt(t.value, t.unit) if t.value is not None else (t.why_unmeasured or "—")
                rows[number].append(f"| {section.title} | {t.text} | {measured} | **{t.status}** |")
        kept = self.kept or Kept()
        table = self._merged(rows, kept.targets)
        out += table or ["| — | no scenario ran | — | — |"]
        out.append("")
        out += self._merged(texts, {n: ["\n".join(lines).rstrip(), ""] for n, lines in kept.sections.items()})
        return "\n".join(out).rstrip() + "\n"

    def _section(self, s: Section) -> list[str]:
        out = [f"## {s.title}", ""]
        if s.skipped:
            out += [f"**Not measured:** {s.skipped}", ""]
        if s.method:
            out += ["### Method", ""] + [f"- {line}" for line in s.method] + [""]
        if s.commands:
            out += ["### Commands", "", "```", *s.commands, "```", ""]
        if s.measurements:
            out += ["### Results", "", "| measurement | median | runs |", "| --- | --- | --- |"]
            for m in s.measurements:
                runs = ", ".join(fmt(v) for v in m.runs) or "—"
                label = m.label + (f" ({m.note})" if m.note else "")
                out.append(f"| {label} | {fmt(m.median, m.unit)} | {runs} |")
            out.append("")
        if s.ratios:
            out += ["### Ratios", "", "| ratio | value | meaning |", "| --- | --- | --- |"]
            for r in s.ratios:
                out.append(f"| {r.label} | {fmt(r.value, 'x')} | {r.note} |")
            out.append("")
        if s.targets:
            out += ["### Targets", ""]
            for t in s.targets:
                measured = fmt(t.value, t.unit) if t.value is not None else (t.why_unmeasured or "—")
                out.append(f"- {t.text}: measured {measured} → **{t.status}**")
            out.append("")
        if s.notes:
            out += ["### Notes", ""] + [f"- {line}" for line in s.notes] + [""]
        out += [f"_Scenario time: {s.seconds:.0f} s._", ""]
        return out
