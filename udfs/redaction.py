"""Secrets and personal data in source code: found, typed, and redacted so the code still parses.

``find_secrets(text)`` returns typed spans; ``redact(text)`` replaces each with a placeholder and
counts them by type. Placeholders (``<EMAIL>``, ``<IP_ADDRESS>``, ``<KEY>``, ``<PASSWORD>``) hold
no quote, backslash or newline, and only the secret's own characters are replaced (inside a string
literal, the literal stays a literal), so a file that parsed before still parses. The same
functions serve the filter stage (source files) and the chat-log source (messages).

What is found, and by what:

* **detect-secrets** (Yelp, 1.5; run in-process on single lines, no temporary files): its
  ``KeywordDetector`` (a value assigned to a name like password/secret/token/api_key, in the
  assignment syntaxes of many languages and config formats). It is run only on lines that
  mention such a name: at ~0.1 ms a line, every line of a large corpus would cost more than the
  rest of the filter stage.
  A keyword value is kept unless it looks random enough to be a credential (``_credential_like``):
  detect-secrets reports ``password = "password"`` and ``token = "<your token>"`` too.
* **Hand-written patterns** where detect-secrets reports a partial value that cannot be redacted
  by span — GitHub tokens (only the ``ghp`` prefix), JWTs (without the signature), private keys
  (only the ``BEGIN`` line) — or misses what it should find: its ``BasicAuthDetector`` refuses a
  URL password holding any of RFC 3986's sub-delimiters (``! $ & ' ( ) * + , ; =``), which
  userinfo allows; or has no detector: Google API keys, e-mail addresses, IPv6, and the current
  ``sk-proj-`` OpenAI keys. Each follows the issuer's published format (AWS key ids
  ``AKIA…`` + 16; GitHub ``ghp_`` etc. + 36, ``github_pat_`` + 82; GitLab ``glpat-`` + 20; Slack
  ``xox[abposr]-``; Stripe ``sk_live_``/``rk_live_``; Google ``AIza`` + 35; JWT three base64url
  parts starting ``eyJ``; Anthropic ``sk-ant-api03-``; Hugging Face ``hf_`` + 34; PyPI
  ``pypi-AgE…``; npm ``npm_`` + 36; SendGrid ``SG.`` 22 ``.`` 43; Databricks ``dapi`` + 32 hex;
  DigitalOcean ``do[opr]_v1_`` + 64 hex; Shopify ``shp(at|ca|pa|ss)_`` + 32 hex; Twilio API keys
  ``SK`` + 32 hex; Azure storage ``AccountKey=``; an HTTP ``Bearer`` value that looks random)
  and is tested positive and negative. These are found without a credential word on the line:
  a key passed positionally (``login("hf_…")``) has none.
* **Configuration lines** (YAML's ``name: value``, .env's ``NAME=value``) give a credential name
  a bare value, which detect-secrets' keyword patterns (quoted values) miss; code's bare values
  there are references and types (``settings.api_key``, ``_StrPathToken``), which are left.
* **Filters** against what looks like a secret and is not (bigcode's PII pipeline for The Stack
  filtered the same): e-mail addresses at example/test/invalid/localhost domains or at
  ``git@``/``noreply``; IP addresses that are private, loopback, link-local, reserved or
  documentation ranges (``ipaddress``'s ``is_global``), or that look like version numbers;
  hex digests (git SHAs, lockfile hashes), UUIDs and version strings are never keyword secrets.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from dataclasses import dataclass
from functools import cache

EMAIL, IP_ADDRESS, KEY, PASSWORD = "EMAIL", "IP_ADDRESS", "KEY", "PASSWORD"
PLACEHOLDER = {EMAIL: "<EMAIL>", IP_ADDRESS: "<IP_ADDRESS>", KEY: "<KEY>", PASSWORD: "<PASSWORD>"}
KINDS = (EMAIL, IP_ADDRESS, KEY, PASSWORD)


@dataclass(frozen=True, order=True)
class Finding:
    start: int
    end: int
    kind: str  # EMAIL | IP_ADDRESS | KEY | PASSWORD
    detector: str  # which pattern or detect-secrets plugin found it


# --- keys with a published format -------------------------------------------------------------
_KEY_PATTERNS: dict[str, re.Pattern] = {
    "aws_access_key_id": re.compile(
        r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}(?![A-Z0-9])"),
    "aws_secret_access_key": re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?(?P<v>[A-Za-z0-9/+=]{40})"
        r"(?![A-Za-z0-9/+=])"),
    "github_token": re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|"
                               r"github_pat_[A-Za-z0-9_]{82})(?![A-Za-z0-9_])"),
    "gitlab_token": re.compile(r"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-])"),
    "slack_token": re.compile(r"(?<![A-Za-z0-9-])xox[abposr]-(?:[0-9A-Za-z]+-){1,4}[0-9A-Za-z]+"),
    "slack_webhook": re.compile(
        r"https://hooks\.slack\.com/services/(?P<v>T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})"),
    "stripe_key": re.compile(r"(?<![A-Za-z0-9_])[rs]k_live_[A-Za-z0-9]{16,}(?![A-Za-z0-9_])"),
    "google_api_key": re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
    "openai_key": re.compile(
        r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ"
        r"[A-Za-z0-9_-]{20,}(?![A-Za-z0-9_-])|(?<![A-Za-z0-9_-])sk-[A-Za-z0-9]{48}"
        r"(?![A-Za-z0-9_-])"),
    "jwt": re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."
                      r"[A-Za-z0-9_-]{8,}(?![A-Za-z0-9_-])"),
    "anthropic_key": re.compile(
        r"(?<![A-Za-z0-9_-])sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])"),
    "huggingface_token": re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{34}(?![A-Za-z0-9_])"),
    "pypi_token": re.compile(r"(?<![A-Za-z0-9_-])pypi-AgE[A-Za-z0-9_-]{50,}"),
    "npm_token": re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])"),
    "sendgrid_key": re.compile(r"(?<![A-Za-z0-9_-])SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"
                               r"(?![A-Za-z0-9_-])"),
    "databricks_token": re.compile(r"(?<![A-Za-z0-9_])dapi[0-9a-f]{32}(?:-\d+)?(?![A-Za-z0-9_])"),
    "digitalocean_token": re.compile(r"(?<![A-Za-z0-9_])do[opr]_v1_[0-9a-f]{64}(?![A-Za-z0-9_])"),
    "shopify_token": re.compile(r"(?<![A-Za-z0-9_])shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}"
                                r"(?![A-Za-z0-9_])"),
    # the literal first, then the look-behind: "SK" is common in code (TASK, MASK), and a
    # pattern that starts with a literal is searched for at memchr speed
    "twilio_api_key": re.compile(r"SK(?<![A-Za-z0-9_]SK)[0-9a-f]{32}(?![A-Za-z0-9_])"),
    "azure_storage_key": re.compile(
        r"(?:AccountKey|SharedAccessKey)=(?P<v>[A-Za-z0-9+/]{40,86}={0,2})(?![A-Za-z0-9+/=])"),
    # an HTTP bearer credential written out (a JWT is found as one); kept only if it looks chosen
    # at random (``_credential_like``), so ``Bearer your_access_token`` stays
    "bearer_token": re.compile(r"(?<![A-Za-z0-9])[Bb]earer\s+(?P<v>[A-Za-z0-9._~+/-]{20,512}=*)"
                               r"(?![A-Za-z0-9._~+/=-])"),
}
# the patterns whose match must also pass ``_credential_like`` (no fixed prefix vouches for them)
_CHECKED = frozenset({"bearer_token"})
# literal strings one of which a pattern's match contains: a pattern runs only on text that holds
# one (``in`` is a memchr-speed scan; the patterns' lookbehinds are not)
_KEY_HINTS: dict[str, tuple[str, ...]] = {
    "aws_access_key_id": ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA"),
    "aws_secret_access_key": ("aws", "AWS", "Aws"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab_token": ("glpat-",),
    "slack_token": ("xox",),
    "slack_webhook": ("hooks.slack.com",),
    "stripe_key": ("k_live_",),
    "google_api_key": ("AIza",),
    "openai_key": ("sk-",),
    "jwt": ("eyJ",),
    "anthropic_key": ("sk-ant-",),
    "huggingface_token": ("hf_",),
    "pypi_token": ("pypi-AgE",),
    "npm_token": ("npm_",),
    "sendgrid_key": ("SG.",),
    "databricks_token": ("dapi",),
    "digitalocean_token": ("_v1_",),
    "shopify_token": ("shp",),
    "twilio_api_key": ("SK",),
    "azure_storage_key": ("AccountKey=", "SharedAccessKey="),
    "bearer_token": ("earer",),
}
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                          r"(?P<body>[\s\S]{0,8192}?)-----END (?:[A-Z0-9]+ )*PRIVATE KEY")
# the base64 payload inside a private key block, run by run: quotes, newlines and string
# concatenation around it stay as they are
_KEY_BODY = re.compile(r"(?<!\\)[A-Za-z0-9+/=]{16,}")  # not the n of a \\n escape

# --- e-mail addresses and IP addresses ----------------------------------------------------------
# the scan starts at each "@" (a literal: fast); the local part is read backwards in Python
_EMAIL_DOMAIN = re.compile(r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                           r"[A-Za-z]{2,24})(?![\w-])")
_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-")
_EXAMPLE_DOMAINS = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net|edu)|example|test|invalid|"
                              r"localhost|local|domain\.com|email\.com|company\.com)$", re.I)
_NOT_A_TLD = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "ts", "py",
                        "css", "html", "json", "md", "txt", "min"})
_NOT_PERSONAL = frozenset({"git", "noreply", "no-reply", "nobody", "root", "user", "username",
                           "name", "email", "someone", "somebody", "foo", "bar", "you", "me"})
# candidates only (a digit starts the scan); boundaries and ranges are checked in Python, which
# is several times faster than lookbehinds tried at every position of the text
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
# a run of hex digits and colons with at least two colons; ``ipaddress`` decides if it is one
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{3,39}"
                   r"(?![\w:.])")
_FULL_IPV6_HINT = re.compile(r"[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_VERSIONISH = re.compile(r"(?i)(?:(?<![a-z])(?:version|ver|v|release)|==|>=|<=|~=|\^)\s*[:=]?\s*[\"'(\[]?\s*$")

# --- passwords in URLs and credential assignments (detect-secrets) -----------------------------
# names that introduce a credential, case-insensitively: passw, pwd, secret, token, api_key,
# auth_key, credential, private_key. Written as one first-letter class then the rest per letter,
# which lets the regex engine skip to candidate letters instead of trying every branch at every
# position (3× faster than the plain (?i) alternation, the same matches)
_TRIGGER = re.compile(r"[PpSsTtAaCc](?:(?<=[Pp])(?i:assw|wd|rivate_?key)|(?<=[Ss])(?i:ecret)|"
                      r"(?<=[Tt])(?i:oken)|(?<=[Aa])(?i:pi[_-]?key|uth[_-]?key)|"
                      r"(?<=[Cc])(?i:redential))")
# scheme://user:password@host, userinfo as RFC 3986 allows it (unreserved, %-encoded, sub-delims)
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,15}://[A-Za-z0-9._~%!$&'()*+,;=-]{1,64}:"
                           r"(?P<v>[A-Za-z0-9._~%!$&'()*+,;=-]{1,128})@[A-Za-z0-9]")
_HEX_DIGEST = re.compile(r"^(?:sha\d{1,3}[-:])?[0-9a-fA-F]{16,128}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^v?\d+(?:\.\d+){1,3}(?:[-+.][0-9A-Za-z.]+)?$")
_LETTERS = re.compile(r"^[A-Za-z]+(?:[_.-][A-Za-z]+)*$")
_SEGMENTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_TEMPLATE = re.compile(r"\$\{|\{\{|\{[\w.]*\}|<[^>]*>|%(?:\(\w+\))?[sdrfi]|^\*+$|^x+$|"
                       r"(?i:^(?:changeme|password|passwd|pass|pwd|pw|secret|token|user|username|"
                       r"none|null|true|false|undefined|example|test|dummy|redacted|xxx+)$)|"
                       r"^urn:")
_NAMES = r"(?:passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|auth[_-]?key|credentials?)"
# name = "value", name: "value", "name": "value", name := "value" for the names detect-secrets
# looks for; hand-written beside it because its value pattern must start with a letter or digit
# (a chosen password like "!rnPf0jWsqRoW" or "&ST6IaX&q*A2h9Uz" was missed)
_QUOTED_ASSIGNMENT = re.compile(
    rf"(?i)[\w.-]*{_NAMES}[\w.-]*[\"']?\s*(?::=|=|:)\s*(?P<q>[\"'])(?P<v>[^\"'\s\\]{{8,256}})(?P=q)")
# the same names given a bare value on a line of its own, as configuration writes it: YAML's
# ``name: value``, and ``NAME=value`` with no space around ``=`` (.env, shell, properties). Code's
# ``name = value`` is left out: its bare value is a variable, not a secret
_BARE_ASSIGNMENT = re.compile(
    rf"(?i)^\s*(?:export\s+|-\s+)?[\w.-]*{_NAMES}[\w.-]*(?:=|:[ \t]+)"
    r"(?P<v>[^\s\"'#(){}\[\],;`<>$]{8,256})[ \t]*(?:#.*)?$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")  # settings.api_key, if named so


def _entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _words(value: str) -> bool:
    """Letters only, as an identifier or a setting's name: snake_case in one case
    (``layer_token_lr_schedule``, ``DEPLOYMENT_SECRET_SCOPE``), or words of three or more
    letters (``privateKeyUsagePeriod``) — not random letters (``RDXNfPxOMFQ``)."""
    if not _LETTERS.match(value):
        return False
    if "_" in value and (value.islower() or value.isupper()):
        return True
    return all(len(w) >= 3 for w in _SEGMENTS.findall(value))


def _credential_like(value: str) -> bool:
    """A keyword value worth redacting: 8–256 characters, no spaces, not a template, a known
    non-secret shape or plain words, and mixed enough to be chosen rather than typed as a word:
    Shannon entropy at least 0.75 × log2(length) bits per character (the most a string of that
    length can have is log2(length); ``hunter2hunter2`` 2.8 < 2.86, ``S3cr3t!pa55word`` 3.4 ≥
    2.93)."""
    if not 8 <= len(value) <= 256 or any(ch.isspace() for ch in value):
        return False
    if _TEMPLATE.search(value) or _HEX_DIGEST.match(value) or _UUID.match(value) or \
            _VERSION.match(value) or _words(value):
        return False
    return _entropy(value) >= 0.75 * math.log2(len(value))


def _bare_credential(value: str) -> bool:
    """An unquoted configuration value worth redacting: credential-like, and not what code or
    documentation writes there — a reference (``settings.api_key``), a type (``_StrPathToken``),
    a docstring's ``name: type:``."""
    if _DOTTED.match(value) and all(_identifier(part) for part in value.split(".")):
        return False
    return _credential_like(value) and not value.endswith(":") and not _words(value.lstrip("_"))


def _identifier(name: str) -> bool:
    """A name as code writes it: one case with digits and underscores (``api_key_v2``, ``ENV``)
    or words (``apiKey``); a random run mixes cases (``tqGCzj``)."""
    bare = name.strip("_")
    return bare.islower() or bare.isupper() or _words(bare)


@cache
def _detect_secrets_plugins():
    """detect-secrets' keyword plugin, built once per process."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    by_name = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
    return (by_name["KeywordDetector"](),)


def _scan_line(line: str):
    """(detect-secrets plugin, value) found in one line. Called on the plugin directly:
    detect-secrets' ``scan_line`` rebuilds its settings for every line, which cost more than the
    scan itself; its filters are ours (``_credential_like``)."""
    for plugin in _detect_secrets_plugins():
        for secret in plugin.analyze_line(filename="code", line=line, line_number=0):
            if secret.secret_value:
                yield plugin.__class__.__name__, secret.secret_value


_URL_AUTHORITY = re.compile(r"://[^\s/@'\"]*$")


def _emails(text: str):
    if "@" not in text:
        return
    for m in _EMAIL_DOMAIN.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        while start < m.start() and not text[start].isalnum():
            start += 1  # the local part starts with a letter or digit
        if start == m.start() or (start > 0 and text[start - 1] in _LOCAL_CHARS):
            continue  # no local part, or one longer than 64 characters
        if _URL_AUTHORITY.search(text[max(0, start - 256):start]):
            continue  # user:password@host in a URL: the password is found as such
        local, domain = text[start:m.start()].lower(), m.group("domain").lower()
        if _EXAMPLE_DOMAINS.search(domain) or domain.rsplit(".", 1)[-1] in _NOT_A_TLD \
                or local in _NOT_PERSONAL:
            continue
        yield Finding(start, m.end(), EMAIL, "email")


def _bounded(text: str, start: int, end: int) -> bool:
    """No word character or dot right before or after (not part of a longer number or name)."""
    return not (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._")) and not (
        end < len(text) and (text[end].isalnum() or text[end] in "._"))


def _public_ips(text: str):
    for pattern, detector in ((_IPV4, "ipv4"), (_IPV6, "ipv6")):
        if detector == "ipv6" and "::" not in text and not _FULL_IPV6_HINT.search(text):
            continue
        for m in pattern.finditer(text):
            if detector == "ipv4" and not _bounded(text, m.start(), m.end()):
                continue
            try:
                address = ipaddress.ip_address(m.group())
            except ValueError:
                continue
            if not address.is_global or address.is_multicast:
                continue
            if detector == "ipv4" and _VERSIONISH.search(text[max(0, m.start() - 12):m.start()]):
                continue
            groups = [g for g in m.group().split(":") if g]
            if detector == "ipv6" and (len(groups) < 3 or max(map(len, groups)) < 3):
                continue  # slices (a[1::2]) and times (12:30:45) are not addresses
            yield Finding(m.start(), m.end(), IP_ADDRESS, detector)


def _keys(text: str):
    for detector, pattern in _KEY_PATTERNS.items():
        if not any(hint in text for hint in _KEY_HINTS[detector]):
            continue
        for m in pattern.finditer(text):
            start, end = m.span("v") if "v" in pattern.groupindex else m.span()
            if detector in _CHECKED and not _credential_like(text[start:end]):
                continue
            yield Finding(start, end, KEY, detector)
    for m in _PRIVATE_KEY.finditer(text) if "PRIVATE KEY" in text else ():
        offset = m.start("body")
        for run in _KEY_BODY.finditer(m.group("body")):
            yield Finding(offset + run.start(), offset + run.end(), KEY, "private_key")


def _passwords(text: str):
    if "://" in text:
        for m in _URL_PASSWORD.finditer(text):
            if not _TEMPLATE.search(m.group("v")):  # postgresql://user:password@host
                yield Finding(*m.span("v"), PASSWORD, "url_password")
    seen = -1
    for trigger in _TRIGGER.finditer(text):  # only the lines that name a credential
        at = text.rfind("\n", 0, trigger.start()) + 1
        if at <= seen:
            continue
        seen = at
        end = text.find("\n", trigger.end())
        line = text[at:len(text) if end < 0 else end]
        if len(line) > 4096:
            continue
        for m in _QUOTED_ASSIGNMENT.finditer(line):
            if _credential_like(m.group("v")):
                yield Finding(at + m.start("v"), at + m.end("v"), PASSWORD, "assignment")
        bare = _BARE_ASSIGNMENT.match(line)
        if bare and _bare_credential(bare.group("v")):
            yield Finding(at + bare.start("v"), at + bare.end("v"), PASSWORD, "bare_assignment")
        for plugin, value in _scan_line(line.rstrip("\r")):
            if not _credential_like(value):
                continue
            i = line.find(value)
            while i >= 0:
                yield Finding(at + i, at + i + len(value), PASSWORD, plugin)
                i = line.find(value, i + len(value))


def find_secrets(text: str) -> list[Finding]:
    """Every secret and personal datum in ``text``, as non-overlapping spans in text order (of
    overlapping ones, the earliest, then the longest, wins)."""
    found = sorted([*_keys(text), *_passwords(text), *_emails(text), *_public_ips(text)],
                   key=lambda f: (f.start, -(f.end - f.start)))
    out: list[Finding] = []
    for f in found:
        if not out or f.start >= out[-1].end:
            out.append(f)
    return out


def redact(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with every finding replaced by its placeholder, and the count of each kind."""
    findings = find_secrets(text)
    if not findings:
        return text, {}
    parts, counts, at = [], {}, 0
    for f in findings:
        parts += [text[at:f.start], PLACEHOLDER[f.kind]]
        counts[f.kind] = counts.get(f.kind, 0) + 1
        at = f.end
    parts.append(text[at:])
    return "".join(parts), counts


def secret_share(text: str, findings: list[Finding]) -> float:
    """The share of the text's characters that are secrets (for ``mostly_secrets``)."""
    return sum(f.end - f.start for f in findings) / max(len(text), 1)
