"""Kill rate per file of the last `mutmut run` (`make mutation` prints it): killed / all mutants.

A timeout counts as killed (the mutant made the tests hang, and the run stopped it); a mutant no
selected test runs ("no tests") counts as survived.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


def mutant_statuses() -> dict[str, str]:
    mutmut = Path(sys.executable).parent / "mutmut"
    listing = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", listing, flags=re.MULTILINE))


def source_file(mutant: str) -> str:
    module = re.split(r"\.x(?:ǁ|_)", mutant, maxsplit=1)[0]
    return module.replace(".", "/") + ".py"


def main() -> int:
    by_file: dict[str, Counter] = defaultdict(Counter)
    for mutant, status in mutant_statuses().items():
        by_file[source_file(mutant)][status] += 1
    if not by_file:
        print("no mutants: run `make mutation` first")
        return 1
    print(f"{'file':<22} {'killed':>7} {'total':>6} {'rate':>6}  survivors by status")
    total = Counter()
    for name, statuses in sorted(by_file.items()):
        total.update(statuses)
        print(row(name, statuses))
    print(row("all", total))
    return 0


def row(name: str, statuses: Counter) -> str:
    detected = sum(count for status, count in statuses.items() if status in DETECTED)
    count = sum(statuses.values())
    rest = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()) if status not in DETECTED)
    return f"{name:<22} {detected:>7} {count:>6} {detected / count:>6.1%}  {rest}"


if __name__ == "__main__":
    sys.exit(main())
