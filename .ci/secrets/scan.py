"""Secret scanning with detect-secrets, taught keyplane's `fm_` keys and `fmi_` invitations.

    python .ci/secrets/scan.py                 the repository's tracked files
    python .ci/secrets/scan.py PATH [PATH...]  files or folders (every file in them), e.g. logs

Prints each finding as `file:line: type` (never the secret itself) and exits 1 if there is any.
Settings, each with its reason:
- keyplane_plugin.py adds the `fm_` (checksum verified) and `fmi_` detectors;
- KeywordDetector is off: it reports every `password = "..."` literal of the test fixtures and
  every constant named like a secret (`SECRET_PREFIX = "fm_"`), so its findings are all noise
  here; the format-aware detectors and the entropy detectors stay on;
- in logs (given paths), the two entropy detectors are off too: every row id logged
  (`usr_` + 20 random base62 characters) trips them; in the repository they stay on;
- the secret `hunter2` is allowed: tests/test_http_auth.py plants it in a fake database URL
  to prove that an internal error never shows it;
- GraphiQL's vendored builds (src/keyplane/graphiql/static/vendor/) are left out: third-party
  files written by `make vendor-graphiql`, held byte for byte to the npm tarballs' checksums
  recorded in their versions.json (tests/test_graphiql.py), whose hashes are all the entropy
  detectors found there; their 4 MB were about half of the scan's time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OPTIONS = [
    "--plugin",
    str(HERE / "keyplane_plugin.py"),
    "--disable-plugin",
    "KeywordDetector",
    "--exclude-secrets",
    "^hunter2$",
    "--exclude-files",
    "^src/keyplane/graphiql/static/vendor/",
]

MAX_SHOWN = 20  # findings shown per file
LOG_OPTIONS = [
    "--disable-plugin",
    "Base64HighEntropyString",
    "--disable-plugin",
    "HexHighEntropyString",
]


def scan(paths: list[str]) -> dict[str, list[dict[str, object]]]:
    """Findings by file; no paths: the repository's tracked files."""
    if not paths:
        return _detect_secrets(ROOT, [])
    # One detect-secrets process per path, two at a time (it scans about 0.35 MB/s per core).
    with ThreadPoolExecutor(max_workers=2) as pool:
        scanned = pool.map(_scan_path, map(Path, paths))
    return {name: found for findings in scanned for name, found in findings.items()}


def _scan_path(path: Path) -> dict[str, list[dict[str, object]]]:
    # detect-secrets silently skips files outside its working directory: scan from there.
    folder, target = (path, ".") if path.is_dir() else (path.parent, path.name)
    found = _detect_secrets(folder, [*LOG_OPTIONS, "--all-files", target])
    return {str(folder / name): findings for name, findings in found.items()}


def _detect_secrets(cwd: Path, arguments: list[str]) -> dict[str, list[dict[str, object]]]:
    command = [str(Path(sys.executable).parent / "detect-secrets"), "scan", *OPTIONS, *arguments]
    output = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout
    results: dict[str, list[dict[str, object]]] = json.loads(output)["results"]
    return results


def main() -> None:
    paths = sys.argv[1:]
    what = f"{len(paths)} path(s)" if paths else "the repository's tracked files"
    findings = scan(paths)
    count = sum(len(found) for found in findings.values())
    for filename, found in sorted(findings.items()):
        for finding in found[:MAX_SHOWN]:
            print(f"{filename}:{finding['line_number']}: {finding['type']}")
        if len(found) > MAX_SHOWN:
            print(f"{filename}: ... and {len(found) - MAX_SHOWN} more")
    print(f"secret scan of {what}: {count} finding(s)")
    if count:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
