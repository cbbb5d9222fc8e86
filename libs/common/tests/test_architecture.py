"""A small architecture lint: the shape the style guide asks for, checked on every `make test`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVICES = sorted(p.name.replace("-", "_") for p in (ROOT / "services").iterdir() if p.is_dir())
SOURCE_DIRS = [ROOT / "libs/common/src", *sorted((ROOT / "services").glob("*/src"))]


def python_files():
    for base in SOURCE_DIRS:
        yield from base.rglob("*.py")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def owner(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    return rel[3] if rel[0] == "services" else None


def test_domain_code_never_commits_the_session():
    # Requests commit in the session dependency; consumers commit once per event batch.
    allowed = {ROOT / "libs/common/src/common/db/session.py"}
    offenders = [
        str(p.relative_to(ROOT))
        for p in python_files()
        if p not in allowed and re.search(r"session\.commit\(", p.read_text())
    ]
    assert offenders == []


def test_only_the_messaging_package_imports_aiokafka():
    messaging = ROOT / "libs/common/src/common/messaging"
    offenders = [
        str(p.relative_to(ROOT))
        for p in python_files()
        if messaging not in p.parents
        and any(i == "aiokafka" or i.startswith("aiokafka.") for i in imports_of(p))
    ]
    assert offenders == []


def test_no_service_imports_another_service():
    offenders = []
    for p in python_files():
        me = owner(p)
        for name in imports_of(p):
            top = name.split(".")[0]
            if top in SERVICES and top != me:
                offenders.append(f"{p.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_common_never_imports_a_service():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "libs/common/src").rglob("*.py")
        if any(i.split(".")[0] in SERVICES for i in imports_of(p))
    ]
    assert offenders == []


def test_every_service_has_the_same_shape():
    for service_dir in sorted((ROOT / "services").iterdir()):
        pkg = service_dir.name.replace("-", "_")
        for rel in [
            "pyproject.toml", "Dockerfile", "alembic.ini", "migrations/env.py",
            f"src/{pkg}/app.py", f"src/{pkg}/worker.py", f"src/{pkg}/settings.py",
            f"src/{pkg}/models/__init__.py",
        ]:
            assert (service_dir / rel).is_file(), f"{service_dir.name} lacks {rel}"
