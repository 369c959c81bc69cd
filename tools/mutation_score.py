"""Mutation score per module from ``mutmut results --all true`` (run by ``make mutation``).

mutmut prints one line per mutant, ``    data_prep.boxes.x_make_boxes__mutmut_3: killed``. A mutant counts
as caught when killed, timed out or caught by the type checker; the score is caught / checked, where
"checked" leaves out mutants never run (an interrupted or partial run). Prints a table and the
surviving mutants of each module (``mutmut show NAME`` shows the diff of one)."""
from __future__ import annotations

import collections
import re
import subprocess
import sys

CAUGHT = {"killed", "timeout", "caught by type check"}
UNRUN = {"not checked", "skipped", "check was interrupted by user"}


def module_of(name: str) -> str:
    return re.split(r"\.x_|\.x\u01c1", name, maxsplit=1)[0]


def main() -> int:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors: dict[str, list[str]] = collections.defaultdict(list)
    for line in out.splitlines():
        if ": " not in line:
            continue
        name, status = line.strip().rsplit(": ", 1)
        mod = module_of(name)
        stats[mod][status] += 1
        if status not in CAUGHT | UNRUN:
            survivors[mod].append(f"{name} ({status})")
    if not stats:
        print("mutation: no results (run `mutmut run` first)")
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
    if "-v" in sys.argv:
        for mod in sorted(survivors):
            print(f"\n{mod}: {len(survivors[mod])} not caught")
            print("\n".join("  " + s for s in survivors[mod]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
