"""License of a repository as a lower-case SPDX id, from license files or Python package metadata.

Order of evidence (strongest first), applied by ``jobs.ingest`` per repository:

1. ``License-Expression`` in a wheel's METADATA (PEP 639: an SPDX expression by definition);
2. the text of a LICENSE / LICENCE / COPYING file at the repository root or in ``*.dist-info/``;
3. the free-text ``License:`` field of METADATA, when it names a known license;
4. ``License ::`` trove classifiers.

Hand-written rather than scancode-toolkit: scancode is a heavy install with native parts for what is,
here, a handful of well-known permissive and copyleft texts. A text we cannot name gives None, which
the filter counts under its own reason (``license_unknown``) instead of guessing.
"""

from __future__ import annotations

import re
from email.parser import HeaderParser

from udfs.languages import language_for_path

# Phrases that occur in the canonical text of each license (checked in order: more specific first).
_TEXT_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("agpl-3.0", ("gnu affero general public license",)),
    ("lgpl-3.0", ("gnu lesser general public license", "version 3")),
    ("lgpl-2.1", ("gnu lesser general public license", "version 2.1")),
    ("gpl-3.0", ("gnu general public license", "version 3")),
    ("gpl-2.0", ("gnu general public license", "version 2")),
    ("mpl-2.0", ("mozilla public license", "2.0")),
    ("apache-2.0", ("apache license", "version 2.0")),
    ("psf-2.0", ("python software foundation license",)),
    ("unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("cc0-1.0", ("cc0 1.0 universal",)),
    ("isc", ("permission to use, copy, modify, and/or distribute this software for any purpose",)),
    ("mit", ("permission is hereby granted, free of charge",)),
    ("bsd-3-clause", ("redistribution and use in source and binary forms", "neither the name")),
    ("bsd-2-clause", ("redistribution and use in source and binary forms",)),
)

# Free-text names seen in METADATA ``License:`` fields and classifiers, normalized to SPDX ids.
_NAME_ALIASES: dict[str, str] = {
    "mit": "mit",
    "mit license": "mit",
    "the mit license": "mit",
    "mit-0": "mit-0",
    "apache-2.0": "apache-2.0",
    "apache 2.0": "apache-2.0",
    "apache 2": "apache-2.0",
    "apache license 2.0": "apache-2.0",
    "apache license, version 2.0": "apache-2.0",
    "apache software license": "apache-2.0",
    "apache software license 2.0": "apache-2.0",
    "bsd-2-clause": "bsd-2-clause",
    "bsd 2-clause": "bsd-2-clause",
    "simplified bsd": "bsd-2-clause",
    "bsd-3-clause": "bsd-3-clause",
    "bsd 3-clause": "bsd-3-clause",
    "new bsd": "bsd-3-clause",
    "new bsd license": "bsd-3-clause",
    "modified bsd": "bsd-3-clause",
    "isc": "isc",
    "isc license": "isc",
    "isc license (iscl)": "isc",
    "unlicense": "unlicense",
    "the unlicense (unlicense)": "unlicense",
    "cc0-1.0": "cc0-1.0",
    "cc0 1.0 universal (cc0 1.0) public domain dedication": "cc0-1.0",
    "psf-2.0": "psf-2.0",
    "psf": "psf-2.0",
    "python software foundation license": "psf-2.0",
    "mpl-2.0": "mpl-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "mpl-2.0",
    "gpl-2.0": "gpl-2.0",
    "gpl-3.0": "gpl-3.0",
    "gnu general public license v2 (gplv2)": "gpl-2.0",
    "gnu general public license v3 (gplv3)": "gpl-3.0",
    "lgpl-2.1": "lgpl-2.1",
    "lgpl-3.0": "lgpl-3.0",
    "gnu lesser general public license v3 (lgplv3)": "lgpl-3.0",
    "agpl-3.0": "agpl-3.0",
}

_LICENSE_FILE = re.compile(r"^(licen[sc]e|copying)([-_.].*)?$", re.IGNORECASE)


def normalize_license(name: str | None) -> str | None:
    """Map a license name or SPDX id (any case, ``-only``/``-or-later`` suffixes) to an SPDX id."""
    if not name:
        return None
    key = " ".join(name.strip().lower().split())
    key = re.sub(r"-(only|or-later)$", "", key)
    return _NAME_ALIASES.get(key)


def license_from_text(text: str) -> str | None:
    """Name the license of a license file (first 20,000 characters).

    A license matches when all its phrases occur. Files often bundle several licenses (the main one
    first, then those of vendored parts, or a history that mentions others), so among the matches
    the one whose first phrase occurs earliest wins; ties go to the more specific text
    (BSD-3 before BSD-2).
    """
    flat = " ".join(text[:20_000].lower().split())
    best: tuple[int, int, str] | None = None
    for rank, (spdx, phrases) in enumerate(_TEXT_MARKERS):
        if all(p in flat for p in phrases):
            candidate = (flat.index(phrases[0]), rank, spdx)
            best = min(best, candidate) if best else candidate
    return best[2] if best else None


def license_from_metadata(metadata: str) -> tuple[str | None, str | None]:
    """Read a wheel METADATA file.

    Returns ``(expression_license, field_or_classifier_license)``: the first from PEP 639's
    ``License-Expression`` (strong evidence), the second from ``License:`` or trove classifiers
    (weaker than a license file's text). Compound expressions (``MIT OR Apache-2.0``) give the first
    term that we can name, since either license grants the right to use the code.
    """
    headers = HeaderParser().parsestr(metadata, headersonly=True)
    expression = None
    for term in re.split(r"\s+(?:or|and)\s+|[()]", headers.get("License-Expression", ""), flags=re.I):
        expression = normalize_license(term)
        if expression:
            break
    weak = normalize_license(headers.get("License", ""))
    if weak is None:
        for classifier in headers.get_all("Classifier") or []:
            parts = [p.strip() for p in classifier.split("::")]
            if parts[0] == "License" and len(parts) > 1:
                weak = normalize_license(parts[-1])
                if weak:
                    break
    return expression, weak


def is_license_file(relpath: str) -> bool:
    """True for a LICENSE/LICENCE/COPYING file at a repo's root or under a ``*.dist-info/`` folder."""
    parts = relpath.split("/")
    if not _LICENSE_FILE.match(parts[-1]) or language_for_path(parts[-1]):
        return False  # license.py is code about licenses, not a license
    return len(parts) == 1 or parts[0].endswith(".dist-info")


def is_metadata_file(relpath: str) -> bool:
    """True for a wheel's ``*.dist-info/METADATA`` (or an sdist's ``PKG-INFO``) at the repo root."""
    parts = relpath.split("/")
    return (len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA") or (
        relpath == "PKG-INFO"
    )


def repo_license(evidence: list[tuple[str, str]]) -> str | None:
    """Decide one repository's license from ``(relpath, text)`` pairs of its license/metadata files.

    Evidence order is the module docstring's. Paths are sorted so the answer does not depend on
    the order in which a cluster delivered the files.
    """
    expression = from_text = weak = None
    for relpath, text in sorted(evidence):
        if is_metadata_file(relpath):
            exp, w = license_from_metadata(text)
            expression = expression or exp
            weak = weak or w
        elif is_license_file(relpath):
            from_text = from_text or license_from_text(text)
    return expression or from_text or weak



# Permissiveness, most permissive first: what deduplication prefers to keep when copies of one file
# carry different licenses. Public-domain dedications, then the short notice-only licenses, then
# those with more conditions (BSD-3's endorsement clause, Apache-2.0's NOTICE and patent terms,
# PSF's), then weak and strong copyleft. A license not listed ranks after all listed ones; an
# unknown license (None) ranks last.
PERMISSIVENESS: tuple[tuple[str, ...], ...] = (
    ("cc0-1.0", "unlicense", "mit-0"),
    ("mit", "isc", "bsd-2-clause"),
    ("bsd-3-clause",),
    ("apache-2.0",),
    ("psf-2.0",),
    ("mpl-2.0", "lgpl-2.1", "lgpl-3.0"),
    ("gpl-2.0", "gpl-3.0", "agpl-3.0"),
)
_PERMISSIVENESS_RANK = {spdx: rank for rank, group in enumerate(PERMISSIVENESS) for spdx in group}


def permissiveness_rank(license_id: str | None) -> int:
    """0 for the most permissive licenses; len(PERMISSIVENESS) for unlisted; +1 for unknown."""
    if license_id is None:
        return len(PERMISSIVENESS) + 1
    return _PERMISSIVENESS_RANK.get(license_id, len(PERMISSIVENESS))
