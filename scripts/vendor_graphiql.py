"""Refreshes the GraphiQL page's vendored builds: `make vendor-graphiql` (needs `npm`).

    python scripts/vendor_graphiql.py

Fetches the pinned packages below with `npm pack` (the npm registry checks each tarball against
its published integrity), copies their production browser builds and LICENSE files into
src/keyplane/graphiql/static/vendor/, and records what it copied in versions.json there: each
package's exact version and tarball integrity, and each file's size and SHA-256, which
tests/test_graphiql.py checks the files against. To upgrade, change a pin and run it again.

Why GraphiQL 3: 3.8.3 (the version Strawberry's own page loads from a CDN) is the last line
whose npm tarball still carries a self-contained UMD build (`graphiql.min.js`, with CodeMirror 5
and no web workers) that runs from plain <script> tags on top of React 18's UMD builds. GraphiQL
4 and 5 ship ES modules only (5 with Monaco and its web workers), which would need an import map
or a bundler. React 18.3.1 is the last React with UMD builds (React 19 dropped them).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "src" / "keyplane" / "graphiql" / "static" / "vendor"

# package -> (exact version, {file in the tarball's package/ folder: name in vendor/})
PINS: dict[str, tuple[str, dict[str, str]]] = {
    "react": (
        "18.3.1",
        {"umd/react.production.min.js": "react.production.min.js", "LICENSE": "LICENSE.react"},
    ),
    "react-dom": (
        "18.3.1",
        {
            "umd/react-dom.production.min.js": "react-dom.production.min.js",
            "LICENSE": "LICENSE.react-dom",
        },
    ),
    "graphiql": (
        "3.8.3",
        {
            "graphiql.min.js": "graphiql.min.js",
            "graphiql.min.css": "graphiql.min.css",
            "LICENSE": "LICENSE.graphiql",
        },
    ),
}


def npm_pack(spec: str, into: Path) -> dict[str, object]:
    output = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(into), spec],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packed: list[dict[str, object]] = json.loads(output)
    return packed[0]


def main() -> None:
    if shutil.which("npm") is None:
        raise SystemExit("vendor-graphiql: npm is not installed")
    record: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        staged = work / "vendor"
        staged.mkdir()
        for name, (version, files) in PINS.items():
            packed = npm_pack(f"{name}@{version}", work)
            if packed["version"] != version:
                raise SystemExit(
                    f"vendor-graphiql: asked {name}@{version}, got {packed['version']}"
                )
            with tarfile.open(work / str(packed["filename"])) as tarball:
                for inside, target in files.items():
                    member = tarball.extractfile(f"package/{inside}")
                    if member is None:
                        raise SystemExit(f"vendor-graphiql: {name}@{version} has no {inside}")
                    (staged / target).write_bytes(member.read())
            record[name] = {
                "version": version,
                "integrity": packed["integrity"],
                "license": "LICENSE." + name,
                "files": {
                    target: {
                        "from": inside,
                        "bytes": (staged / target).stat().st_size,
                        "sha256": hashlib.sha256((staged / target).read_bytes()).hexdigest(),
                    }
                    for inside, target in files.items()
                },
            }
        (staged / "versions.json").write_text(json.dumps(record, indent=2) + "\n")
        if VENDOR.exists():
            shutil.rmtree(VENDOR)
        shutil.copytree(staged, VENDOR)
    for name, (version, _) in PINS.items():
        print(f"vendor-graphiql: {name}@{version}", file=sys.stderr)
    print(f"vendor-graphiql: wrote {VENDOR.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
