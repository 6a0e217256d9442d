"""`make audit`'s licence classes (infra/audit/licences.py), on licence strings exactly as the
project's own SBOMs carry them (CycloneDX from PyPI metadata and Maven POMs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _licences() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "infra" / "audit" / "licences.py"
    spec = importlib.util.spec_from_file_location("licences", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


licences = _licences()


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["MIT"], "permissive"),
        (["Apache Software License", "Apache-2.0"], "permissive"),
        (["3-Clause BSD License"], "permissive"),
        (["Apache-2.0 AND CNRI-Python"], "permissive"),
        (["LGPL-3.0-only"], "weak-copyleft"),  # psycopg
        (["GNU Library or Lesser General Public License (LGPL)"], "weak-copyleft"),
        (["MPL-2.0 AND (Apache-2.0 OR MIT)"], "weak-copyleft"),  # orjson: MPL part applies
        (["(CDDL-1.0 OR GPL-2.0-with-classpath-exception)"], "weak-copyleft"),
        # Jersey bundles: every listed licence may apply, so the most restrictive counts
        (["Apache License, 2.0", "EPL-2.0", "Public Domain", "MIT"], "weak-copyleft"),
        (["Apache-2.0 OR BSD-2-Clause"], "permissive"),
        (["GPL-3.0-or-later"], "strong-copyleft"),
        (
            ["The GNU General Public License (GPL), Version 2, With Classpath Exception"],
            "weak-copyleft",
        ),
        (["GNU Affero General Public License v3"], "strong-copyleft"),
        (["LGPL-2.1-only OR GPL-2.0-only"], "weak-copyleft"),
        (["MIT", "Some Proprietary EULA"], "unknown"),  # one unrecognised name: look at it
        ([], "unknown"),
    ],
)
def test_a_component_takes_the_most_restrictive_licence_it_lists(
    names: list[str], expected: str
) -> None:
    assert licences.component_class(names) == expected


def test_the_report_fails_on_strong_copyleft_in_the_runtime(tmp_path: Path) -> None:
    """A runtime package under the GPL fails `make audit`; the same as tooling does not."""
    import json

    def sbom(licence: str) -> Path:
        path = tmp_path / f"py-{licence}.json"
        comp = {"name": "tqdm", "version": "4.67.1", "licenses": [{"license": {"id": licence}}]}
        path.write_text(json.dumps({"components": [comp]}))
        return path

    jvm = tmp_path / "sbom-jars-kafka.cdx.json"
    jvm.write_text(json.dumps({"components": []}))
    (tmp_path / "jars").mkdir()
    runtime = tmp_path / "rt.txt"
    runtime.write_text("tqdm==4.67.1\n")
    common = ["--jvm-sboms", str(jvm), "--jars-dir", str(tmp_path / "jars")]
    common += ["--out", str(tmp_path / "l.tsv"), "--runtime", str(runtime)]
    assert licences.main(["--python-sbom", str(sbom("GPL-3.0-only")), *common]) == 1
    assert licences.main(["--python-sbom", str(sbom("MPL-2.0")), *common]) == 0
    runtime.write_text("tqdm==4.67.1 ; python_full_version < '3.0'\n")  # not installed here
    assert licences.main(["--python-sbom", str(sbom("GPL-3.0-only")), *common]) == 0
