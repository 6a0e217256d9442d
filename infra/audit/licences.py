"""Licence report over bookstream's CycloneDX SBOMs (``make audit``, infra/audit/sbom.sh).

Every component of the Python and JVM SBOMs gets one row: ecosystem, name, version, scope
(``runtime``: in what ``make demo`` installs, from uv.lock / infra/pom.xml; ``tooling``: tests,
lint, bench, audit), the licences its metadata declares, and a class:

- ``permissive`` (MIT, BSD, Apache, ISC, PSF, ...), ``weak-copyleft`` (LGPL, MPL, EPL, CDDL,
  GPL with the Classpath exception: fine to link, changes to them are shared),
  ``strong-copyleft`` (GPL, AGPL), ``unknown`` (nothing declared or not recognised).
- Several licences listed for one component may be alternatives (dual licensing) or all apply
  (a jar bundling others' code, as Jersey's lists ten): metadata does not say which, so the most
  restrictive counts, like an SPDX ``AND``; only an explicit SPDX ``OR`` takes the least.

A component the SBOM lacks a licence for is looked up in the installed distribution's own
metadata (License-Expression, License, classifiers). The report fails (exit 1) when a jar under
the state directory is missing from the JVM SBOM, a runtime Python package is missing from the
Python SBOM, or a runtime component is strong copyleft; unknown licences are listed, not fatal.
Last line: JSON summary.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import Marker

CLASSES = ("permissive", "weak-copyleft", "strong-copyleft", "unknown")
_RANK = {c: i for i, c in enumerate(CLASSES)}

# checked in order: the first pattern that matches one licence name decides its class
_PATTERNS: list[tuple[str, str]] = [
    (r"classpath.exception", "weak-copyleft"),
    (r"\bagpl|affero", "strong-copyleft"),
    (r"\blgpl|lesser general public|library general public|library or lesser", "weak-copyleft"),
    (r"\bmpl\b|mozilla public|\bepl\b|eclipse public|\bcddl\b|common development", "weak-copyleft"),
    (r"\bgpl|general public license", "strong-copyleft"),
    (
        r"\bmit\b|\bbsd\b|apache|\bisc\b|python|\bpsf\b|cnri|0bsd|unlicense|\bcc0\b|zlib|hpnd"
        r"|public domain|go license|w3c|jquery|dfsg|historical permission",
        "permissive",
    ),
]


def licence_class(name: str) -> str:
    """The class of one licence name, SPDX id or expression (``A AND B``: the most
    restrictive part; ``A OR B``: the least restrictive)."""
    text = name.strip().strip("()")
    if re.search(r"\s+AND\s+", text):
        return max((licence_class(p) for p in re.split(r"\s+AND\s+", text)), key=_RANK.get)
    if re.search(r"\s+OR\s+", text):
        return min((licence_class(p) for p in re.split(r"\s+OR\s+", text)), key=_RANK.get)
    lowered = text.lower()
    for pattern, cls in _PATTERNS:
        if re.search(pattern, lowered):
            return cls
    return "unknown"


def component_class(licences: list[str]) -> str:
    """The most restrictive of the licences listed (see the module's docstring); none:
    unknown. ``unknown`` ranks last, so one unrecognised name marks the whole component."""
    return max((licence_class(n) for n in licences), key=_RANK.get) if licences else "unknown"


def sbom_licences(component: dict[str, Any]) -> list[str]:
    names = []
    for entry in component.get("licenses", []):
        lic = entry.get("license", {})
        name = entry.get("expression") or lic.get("id") or lic.get("name")
        if name:
            names.append(str(name).removeprefix("License :: OSI Approved :: "))
    return sorted(set(names))


def installed_licences(name: str) -> list[str]:
    """The licences an installed Python distribution declares in its own metadata."""
    try:
        meta = metadata.metadata(name)
    except metadata.PackageNotFoundError:
        return []
    found = [meta.get("License-Expression") or ""]
    found.append((meta.get("License") or "").splitlines()[0] if meta.get("License") else "")
    found += [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if "License" in c]
    return sorted({f for f in found if f and f.upper() != "UNKNOWN" and len(f) < 120})


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_names(requirements: Path) -> set[str]:
    """Names pinned in ``uv export --no-dev`` output (``name==version[ ; marker]`` lines) whose
    environment marker holds on this interpreter (others are never installed here)."""
    names = set()
    for line in requirements.read_text().splitlines():
        req, _, marker = line.strip().partition(";")
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", req.strip())
        if m and (not marker.strip() or Marker(marker.strip()).evaluate()):
            names.add(_norm(m.group(1)))
    return names


def report(args: argparse.Namespace) -> int:
    python_sbom = json.loads(args.python_sbom.read_text())
    # one SBOM per infra/pom.xml profile (each is resolved on its own, as install.sh copies
    # it): `sbom-jars-<profile>.cdx.json`; perf is make bench's alone
    jvm_components: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for path in args.jvm_sboms:
        scope = "tooling" if path.name.startswith("sbom-jars-perf") else "runtime"
        for comp in json.loads(path.read_text()).get("components", []):
            key = (f"{comp.get('group', '')}:{comp['name']}", comp.get("version", ""))
            if key not in jvm_components or scope == "runtime":
                jvm_components[key] = (comp, scope)
    runtime = runtime_names(args.runtime)
    rows: list[tuple[str, str, str, str, str, str]] = []
    for comp in python_sbom.get("components", []):
        name = comp["name"]
        licences = sbom_licences(comp) or installed_licences(name)
        scope = "runtime" if _norm(name) in runtime else "tooling"
        rows.append(
            (
                "python",
                name,
                comp.get("version", ""),
                scope,
                "; ".join(licences),
                component_class(licences),
            )
        )
    jar_files = set()
    for (name, version), (comp, scope) in sorted(jvm_components.items()):
        licences = sbom_licences(comp)
        rows.append(("jvm", name, version, scope, "; ".join(licences), component_class(licences)))
        jar_files.add(f"{comp['name']}-{version}.jar")

    on_disk = {p.name for p in Path(args.jars_dir).glob("*/*.jar")}
    own = {"bookstream-flink-glue.jar"}  # compiled from jobs/java by infra/install.sh
    jars_missing = sorted(on_disk - jar_files - own)
    present = {_norm(r[1]) for r in rows if r[0] == "python"}
    python_missing = sorted(runtime - present)
    strong = sorted(
        f"{r[1]} {r[2]} ({r[4]})" for r in rows if r[3] == "runtime" and r[5] == "strong-copyleft"
    )
    unknown = sorted(f"{r[0]}:{r[1]} {r[2]}" for r in rows if r[5] == "unknown")

    with open(args.out, "w") as out:
        out.write("ecosystem\tname\tversion\tscope\tlicences\tclass\n")
        for row in sorted(rows):
            out.write("\t".join(row) + "\n")
    by_class = {c: sum(1 for r in rows if r[5] == c) for c in CLASSES}
    print(f"licence report: {len(rows)} components -> {args.out}", file=sys.stderr)
    for label, items in (
        ("jars not in the SBOM", jars_missing),
        ("runtime Python packages not in the SBOM", python_missing),
        ("strong copyleft in the runtime", strong),
        ("unknown licence", unknown),
    ):
        if items:
            print(f"  {label}: {', '.join(items)}", file=sys.stderr)
    summary = {
        "python_components": sum(1 for r in rows if r[0] == "python"),
        "jvm_components": sum(1 for r in rows if r[0] == "jvm"),
        "by_class": by_class,
        "unknown": unknown,
        "strong_copyleft_runtime": strong,
        "jars_not_in_sbom": jars_missing,
        "runtime_python_not_in_sbom": python_missing,
        "report": str(args.out),
    }
    print(json.dumps(summary))
    return 1 if jars_missing or python_missing or strong else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-sbom", type=Path, required=True)
    parser.add_argument(
        "--jvm-sboms", type=Path, nargs="+", required=True, help="one per infra/pom.xml profile"
    )
    parser.add_argument(
        "--runtime",
        type=Path,
        required=True,
        help="uv export --no-dev output: the runtime's pinned packages",
    )
    parser.add_argument("--jars-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    return report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
