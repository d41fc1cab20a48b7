"""``nonsite documents check|placeholders``: check the city's enforcement-document templates (every placeholder known,
the number format, all three kinds). Registered on the main parser by :func:`add_parsers`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _folder(a: argparse.Namespace) -> Path | None:
    if a.dir:
        return Path(a.dir)
    if a.config:
        from nonsite.config import load_config

        documents = load_config(a.config).cases.documents
        return Path(documents) if documents else None
    return None


def cmd_check(a: argparse.Namespace) -> int:
    from nonsite.cases.enforcement import DEFAULT_TEMPLATES, check_folder, load_templates

    folder = _folder(a)
    problems = check_folder(folder)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    templates = load_templates(folder)
    for kind, t in templates.templates.items():
        print(f"{kind}: {t.path.name} ({templates.series(kind)}, e.g. {templates.format_number(kind, 2026, 1)}): "
              f"{len(t.placeholders)} placeholders")
    print(f"ok: {folder or DEFAULT_TEMPLATES}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from nonsite.cases.enforcement import PLACEHOLDERS

    for name, what in PLACEHOLDERS.items():
        print(f"{{{{ {name} }}}}\t{what}")
    return 0


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("documents", help="enforcement documents (执法文书): check the city's templates")
    ds = d.add_subparsers(dest="documents_cmd", required=True)
    c = ds.add_parser("check", help="check a template folder: every placeholder known, all kinds, the number format")
    c.add_argument("--dir", help="the template folder (default: cases.documents of --config, else the shipped one)")
    c.add_argument("--config", help="a nonsite config whose cases.documents names the folder")
    c.set_defaults(fn=cmd_check)
    lst = ds.add_parser("placeholders", help="list the placeholders a template may use")
    lst.set_defaults(fn=cmd_list)
