"""Before ``make mutation`` resumes: drop the stale source copies under ``mutants/`` (mutmut 3.8).

mutmut copies the packages to ``mutants/`` only when a copy is missing, so after the sources change a
resumed run would test against the old copies of the modules it does not mutate, and it measures line
coverage on the old (mutated) copy of a changed module, which then gets mutants on the wrong lines.
Removing those copies makes mutmut copy the current file again. For a changed module in the scope its
verdicts (``.meta``) go too, so all its mutants are run again: mutmut keeps a verdict by mutant NAME when
its hash of the function did not change, and a change to a function's signature line (seen: a comment
removed there) renumbered the mutants under unchanged hashes, so old verdicts landed on other mutants.
Nothing else is touched. Prints what it removed."""
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
                if in_scope:
                    for extra in (copy.with_name(copy.name + ".meta"), copy.with_name(copy.name + ".spans")):
                        extra.unlink(missing_ok=True)
                removed.append(str(src))
    if removed:
        print(f"mutation: {len(removed)} changed source file(s) copied afresh: {', '.join(removed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
