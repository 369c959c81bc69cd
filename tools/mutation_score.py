"""Mutation score per module from ``mutmut results --all true`` (run by ``make mutation``).

mutmut prints one line per mutant, ``    data_prep.core.boxes.x_make_boxes__mutmut_3: killed``. A mutant counts
as caught when killed, timed out or caught by the type checker; the score is caught / checked, where
"checked" leaves out mutants never run (an interrupted or partial run). Prints a table (per module and
overall), the wall time and load of the last ``make mutation`` when ``mutation.log`` has them, and with
``-v`` the surviving mutants of each module (``mutmut show NAME`` shows the diff of one).
``--names`` prints only the names of the mutants not caught (what ``make mutation-recheck`` re-runs
after new tests: mutmut keeps a verdict until the function's code changes)."""
from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

CAUGHT = {"killed", "timeout", "caught by type check"}
UNRUN = {"not checked", "skipped", "check was interrupted by user"}
LOG = Path("mutation.log")


def module_of(name: str) -> str:
    return re.split(r"\.x_|\.x\u01c1", name, maxsplit=1)[0]


def results() -> list[tuple[str, str]]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        if ": " in line:
            name, status = line.strip().rsplit(": ", 1)
            rows.append((name, status))
    return rows


def run_facts(log: Path = LOG) -> list[str]:
    """What ``make mutation`` wrote into mutation.log besides mutmut's output: wall time, load."""
    if not log.is_file():
        return []
    text = log.read_text(errors="replace").replace("\r", "\n")
    facts = []
    for key in ("started", "finished"):
        m = re.findall(rf"^mutation {key}: (.*)$", text, flags=re.M)
        if m:
            facts.append(f"{key}: {m[-1]}")
    m = re.findall(r"^mutation wall_s: (\d+)$", text, flags=re.M)
    if m:
        s = int(m[-1])
        facts.append(f"wall time of the last run: {s // 60} min {s % 60} s")
    m = re.findall(r"^mutation cpu .*: (\d+)m([\d.]+)s (\d+)m([\d.]+)s$", text, flags=re.M)  # bash `times`
    if m:
        u_m, u_s, s_m, s_s = m[-1]
        cpu = 60 * (int(u_m) + int(s_m)) + float(u_s) + float(s_s)
        facts.append(f"CPU time of the last run: {cpu / 60:.1f} min (user + sys, mutmut and its workers): "
                     f"about {cpu / 120:.0f} min of wall time on 2 idle cores")
    m = re.findall(r"([\d.]+) mutations/second", text)
    if m:
        facts.append(f"mutants run per second: {m[-1]}")
    return facts


def main(argv: list[str]) -> int:
    rows = results()
    if "--names" in argv:
        print(" ".join(n for n, s in rows if s not in CAUGHT | UNRUN))
        return 0
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors: dict[str, list[str]] = collections.defaultdict(list)
    for name, status in rows:
        mod = module_of(name)
        stats[mod][status] += 1
        if status not in CAUGHT | UNRUN:
            survivors[mod].append(f"{name} ({status})")
    if not stats:
        print("mutation: no results (run `make mutation` first)")
        return 1
    total = collections.Counter()
    print(f"{'module':<28} {'mutants':>8} {'checked':>8} {'caught':>8} {'score':>7}")
    for mod in sorted(stats):
        c = stats[mod]
        n, unrun = sum(c.values()), sum(c[s] for s in UNRUN)
        caught = sum(c[s] for s in CAUGHT)
        checked = n - unrun
        total.update(n=n, checked=checked, caught=caught)
        score = f"{100 * caught / checked:6.1f}%" if checked else "    -"
        print(f"{mod:<28} {n:>8} {checked:>8} {caught:>8} {score:>7}")
    score = f"{100 * total['caught'] / total['checked']:6.1f}%" if total["checked"] else "    -"
    print(f"{'all':<28} {total['n']:>8} {total['checked']:>8} {total['caught']:>8} {score:>7}")
    for fact in run_facts():
        print(fact)
    if "-v" in argv:
        for mod in sorted(survivors):
            print(f"\n{mod}: {len(survivors[mod])} not caught")
            print("\n".join("  " + s for s in survivors[mod]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
