"""Before ``make mutation`` resumes: drop the stale source copies under ``mutants/`` (mutmut 3.8).

mutmut copies the packages to ``mutants/`` only when a copy is missing, so after the sources change a
resumed run would test against the old copies of the modules it does not mutate, and it measures line
coverage on the old (mutated) copy of a changed module, which then gets mutants on the wrong lines.
Removing those copies makes mutmut copy the current file again; a changed module in the scope is then
mutated afresh (verdicts of its unchanged functions are kept, mutmut matches them by a hash of each
function), and nothing else is touched. Prints what it removed."""
from __future__ import annotations

import filecmp
import fnmatch
import tomllib
from pathlib import Path


def main() -> int:
    cfg = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]
    mutants = Path("mutants")
    if not mutants.is_dir():
        return 0
    removed = []
    for root in cfg["source_paths"]:
        for src in sorted(Path(root).rglob("*")):
            copy = mutants / src
            if not src.is_file() or not copy.is_file() or "__pycache__" in src.parts:
                continue
            in_scope = any(fnmatch.fnmatch(str(src), p) for p in cfg.get("only_mutate", []))
            # a mutated copy differs from its source by design: mutmut's own test is the mtime
            stale = (src.stat().st_mtime > copy.stat().st_mtime if in_scope
                     else not filecmp.cmp(src, copy, shallow=False))
            if stale:
                copy.unlink()
                removed.append(str(src))
    if removed:
        print(f"mutation: {len(removed)} changed source file(s) copied afresh: {', '.join(removed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
