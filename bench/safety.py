"""Recall and false positives of redaction and decontamination, on planted sets built from real files.

Ground truth comes from construction, not from the code under test: the bench takes real source
files (``--corpus``: the make-run corpus, else this machine's Python standard library and
site-packages), plants known items at known places, and checks what ``udfs.redaction`` and
``udfs.decontam`` make of them.

* **Decontamination.** Every benchmark task (HumanEval bundled; ``--benchmark NAME=PATH`` for the
  others) is planted into a real Python file three ways: *verbatim* (prompt + canonical solution
  at a top-level line), *class* (the same re-indented into a class body), *renamed* (every local
  name the solution assigns — found here with ``ast``, not with the decontaminator's tokenizer —
  renamed). Recall = planted files flagged, per benchmark and mode. False positives = unplanted
  control files flagged.
* **Secrets.** For every type, ``--per-type`` values in the issuer's format (random characters
  from a seeded generator) are planted as a top-level assignment (keys, passwords, IPs) or a
  comment (e-mail addresses) into real Python files. Recall = files where the planted value is
  gone and a placeholder of its type took its place. Control files altered = unplanted files
  that ``redact`` changed (real files do hold e-mail addresses; the report splits by type).
  Parse check: every planted or control file that parsed before (tree-sitter, the file's own
  grammar) must parse after redaction.
* **Speed.** ``find_secrets`` and ``Decontaminator.check`` over the control files, one process:
  MB/s per core.

    python bench/safety.py [--corpus data/corpus] [--files 3000] [--per-type 200]

Writes ``bench/results/safety.json``.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import random
import re
import string
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402
from udfs.decontam import Decontaminator, load_benchmarks  # noqa: E402
from udfs.languages import language_for_path  # noqa: E402
from udfs.redaction import PLACEHOLDER, find_secrets, redact  # noqa: E402
from udfs.syntax import grammar_name, parse  # noqa: E402

ALNUM = string.ascii_letters + string.digits


def corpus_files(root: Path | None, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(path, text) of ``count`` real source files of 1–100 KB with a known language."""
    roots = [root] if root else [Path(sysconfig.get_paths()["stdlib"]),
                                 Path(sysconfig.get_paths()["purelib"])]
    paths = sorted(p for r in roots for p in r.rglob("*")
                   if p.is_file() and language_for_path(p.name)
                   and 1_000 <= p.stat().st_size <= 100_000 and "test" not in p.parts)
    rng.shuffle(paths)
    out = []
    for p in paths:
        try:
            out.append((str(p), p.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
        if len(out) == count:
            break
    return out


def parses(text: str, path: str) -> bool | None:
    name = grammar_name(language_for_path(Path(path).name), path)
    if name is None:
        return None
    try:
        return not parse(text.encode(), name).root_node.has_error
    except Exception:  # noqa: BLE001 - refused (too deep, too slow): not a parse to compare
        return None


def top_level_lines(text: str) -> list[int]:
    """Line indices where a top-level statement may be inserted in a Python file: after a
    blank line, before an unindented line, outside any multi-line string or bracket."""
    lines = text.split("\n")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [len(lines)]
    starts = [node.lineno - 1 for node in tree.body] + [len(lines)]
    return sorted(set(starts))


def insert(text: str, block: str, rng: random.Random) -> str:
    lines = text.split("\n")
    at = rng.choice(top_level_lines(text))
    return "\n".join(lines[:at] + ["", block.rstrip("\n"), ""] + lines[at:])


# --- decontamination -------------------------------------------------------------------------

def renamed(solution: str) -> str:
    """The solution with every local name it assigns renamed (``ast``: assignment and loop
    targets, comprehension variables, with-as, except-as)."""
    try:
        tree = ast.parse("def _f():\n" + "".join("    " + line + "\n" if line.strip() else "\n"
                                                 for line in solution.split("\n")))
    except SyntaxError:
        return solution
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    out = solution
    for name in sorted(names):
        out = re.sub(rf"\b{re.escape(name)}\b", f"{name}_{len(name)}x", out)
    return out


def plant_problem(host: str, prompt: str, solution: str, mode: str, rng: random.Random) -> str:
    body = prompt + (solution if mode != "renamed" else renamed(solution))
    if mode == "class":
        body = "class PlantedSolutions:\n" + "".join(
            ("    " + line if line.strip() else "") + "\n" for line in body.split("\n"))
    return insert(host, body, rng)


def bench_decontam(items, hosts, controls, rng) -> dict:
    dec = Decontaminator(items)
    by = {}
    for item in items:
        for mode in ("verbatim", "class", "renamed"):
            _, host = rng.choice(hosts)
            match = dec.check(plant_problem(host, item.prompt, item.solution, mode, rng))
            key = f"{item.benchmark}/{mode}"
            hit = match is not None and match.task_id == item.task_id
            total, found = by.get(key, (0, 0))
            by[key] = (total + 1, found + hit)
    started = time.perf_counter()
    flagged = [(path, dec.check(text)) for path, text in controls]
    seconds = time.perf_counter() - started
    fps = [(p, m.detail()) for p, m in flagged if m is not None]
    mb = sum(len(t.encode()) for _, t in controls) / 1e6
    # the substring method's matcher against the plain alternative: every pattern looked up with
    # str.find in the normalized text (what a user writes without Aho–Corasick)
    from udfs.decontam import normalize

    patterns = [p for p, _ in dec._patterns]
    normalized = [normalize(t) for _, t in controls]
    dec._matcher()
    started = time.perf_counter()
    ac_hits = sum(next(dec._matcher().iter(n), None) is not None for n in normalized)
    ac_seconds = time.perf_counter() - started
    started = time.perf_counter()
    find_hits = sum(any(p in n for p in patterns) for n in normalized)
    find_seconds = time.perf_counter() - started
    return {"recall": {k: {"planted": t, "found": f, "recall": round(f / t, 4)}
                       for k, (t, f) in sorted(by.items())},
            "control_files": len(controls), "false_positives": len(fps),
            "false_positive_rate": round(len(fps) / len(controls), 5),
            "false_positive_examples": fps[:10],
            "mb_per_s_per_core": round(mb / seconds, 2),
            "substring_matcher": {"patterns": len(patterns),
                                  "aho_corasick_s": round(ac_seconds, 3),
                                  "str_find_each_pattern_s": round(find_seconds, 3),
                                  "same_files": ac_hits == find_hits}}


# --- secrets ---------------------------------------------------------------------------------

def _chars(rng, n, alphabet=ALNUM):
    return "".join(rng.choice(alphabet) for _ in range(n))


def _jwt(rng) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return (part({"alg": "HS256", "typ": "JWT"}) + "." + part({"sub": _chars(rng, 10),
            "iat": rng.randrange(10**9, 2 * 10**9)}) + "." + _chars(rng, 43, ALNUM + "-_"))


def _public_ipv4(rng) -> str:
    import ipaddress

    while True:
        ip = ipaddress.IPv4Address(rng.randrange(1 << 24, 223 << 24))
        if ip.is_global:
            return str(ip)


def _public_ipv6(rng) -> str:
    import ipaddress

    while True:  # 2000::/3, global unicast
        ip = ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124) | (rng.getrandbits(1) << 125))
        if ip.is_global:
            return ip.compressed


def _password(rng, symbols: str = "!#%&*+-.") -> str:
    while True:
        value = _chars(rng, rng.randrange(10, 20), ALNUM + symbols)
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def _url_password(rng) -> str:
    """A password as a URL's userinfo may hold it unencoded (RFC 3986: unreserved and
    sub-delimiters; not '#', which would end the URL's authority)."""
    return _password(rng, "!*+-._~")


# type → (kind, value maker, line maker); the line puts the value where code would hold it
SECRETS = {
    "aws_access_key_id": ("KEY", lambda r: "AKIA" + _chars(r, 16, string.ascii_uppercase
                                                            + string.digits),
                          lambda v: f'AWS_ACCESS_KEY_ID = "{v}"'),
    "aws_secret_access_key": ("KEY", lambda r: _chars(r, 40, ALNUM + "/+"),
                              lambda v: f'aws_secret_access_key = "{v}"'),
    "github": ("KEY", lambda r: "ghp_" + _chars(r, 36), lambda v: f'GITHUB_TOKEN = "{v}"'),
    "gitlab": ("KEY", lambda r: "glpat-" + _chars(r, 20, ALNUM + "-_"),
               lambda v: f'GITLAB_TOKEN = "{v}"'),
    "slack": ("KEY", lambda r: f"xoxb-{_chars(r, 12, string.digits)}-"
              f"{_chars(r, 13, string.digits)}-{_chars(r, 24)}", lambda v: f'SLACK = "{v}"'),
    "stripe": ("KEY", lambda r: "sk_" + "live_" + _chars(r, 24), lambda v: f'STRIPE = "{v}"'),
    "google_api": ("KEY", lambda r: "AIza" + _chars(r, 35, ALNUM + "-_"),
                   lambda v: f'MAPS_KEY = "{v}"'),
    "openai": ("KEY", lambda r: "sk-proj-" + _chars(r, 20) + "T3BlbkFJ" + _chars(r, 20),
               lambda v: f'OPENAI_API_KEY = "{v}"'),
    "jwt": ("KEY", _jwt, lambda v: f'AUTH_HEADER = "Bearer {v}"'),
    "private_key": ("KEY", lambda r: "\\n".join(_chars(r, 64, ALNUM + "+/") for _ in range(4)),
                    lambda v: 'PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\\n' + v
                    + '\\n-----END RSA PRIVATE KEY-----"'),
    "url_password": ("PASSWORD", _url_password,
                     lambda v: f'DATABASE_URL = "postgresql://app:{v}@db.internal-corp.net/prod"'),
    "password_assignment": ("PASSWORD", _password, lambda v: f'db_password = "{v}"'),
    "email": ("EMAIL", lambda r: f"{_chars(r, 8, string.ascii_lowercase)}."
              f"{_chars(r, 6, string.ascii_lowercase)}@{_chars(r, 7, string.ascii_lowercase)}"
              ".com", lambda v: f"# maintainer: {v}"),
    "ipv4": ("IP_ADDRESS", _public_ipv4, lambda v: f'UPSTREAM_HOST = "{v}"'),
    "ipv6": ("IP_ADDRESS", _public_ipv6, lambda v: f'UPSTREAM_HOST6 = "{v}"'),
    # formats found by their shape alone: planted with no credential word on the line
    "anthropic": ("KEY", lambda r: "sk-ant-api03-" + _chars(r, 93, ALNUM + "-_") + "AA",
                  lambda v: f'client = Anthropic(api_key="{v}")'),
    "huggingface": ("KEY", lambda r: "hf_" + _chars(r, 34, string.ascii_letters),
                    lambda v: f'login("{v}")'),
    "pypi": ("KEY", lambda r: "pypi-AgEIcHlwaS5vcmc" + _chars(r, 64, ALNUM + "-_"),
             lambda v: f'UPLOAD = ["twine", "upload", "-p", "{v}"]'),
    "npm": ("KEY", lambda r: "npm_" + _chars(r, 36), lambda v: f'NPMRC = "//registry.npmjs.org/:_authToken={v}"'),
    "sendgrid": ("KEY", lambda r: f"SG.{_chars(r, 22, ALNUM + '-_')}.{_chars(r, 43, ALNUM + '-_')}",
                 lambda v: f'mail = SendGridAPIClient("{v}")'),
    "databricks": ("KEY", lambda r: "dapi" + _chars(r, 32, "0123456789abcdef"),
                   lambda v: f'w = WorkspaceClient(host=HOST, pat="{v}")'),
    "digitalocean": ("KEY", lambda r: "dop_v1_" + _chars(r, 64, "0123456789abcdef"),
                     lambda v: f'do = Manager("{v}")'),
    "shopify": ("KEY", lambda r: "shpat_" + _chars(r, 32, "0123456789abcdef"),
                lambda v: f'shop = Session(URL, "2024-01", "{v}")'),
    "twilio_api_key": ("KEY", lambda r: "SK" + _chars(r, 32, "0123456789abcdef"),
                       lambda v: f'client = Client("{v}", SECRET, ACCOUNT)'),
    "azure_storage": ("KEY", lambda r: _chars(r, 86, ALNUM + "+/") + "==",
                      lambda v: 'CONN = "DefaultEndpointsProtocol=https;AccountName=acct;'
                      f'AccountKey={v};EndpointSuffix=core.windows.net"'),
    "bearer": ("KEY", lambda r: _chars(r, 40, ALNUM + "-_"),
               lambda v: f'HEADERS = {{"Authorization": "Bearer {v}"}}'),
    "config_line": ("PASSWORD", lambda r: _password(r, "!%&*+-."),
                    lambda v: f'ENV_EXAMPLE = """\nDB_PASSWORD={v}\n"""'),
}


def bench_secrets(hosts, controls, per_type, rng) -> dict:
    by, parse_broken = {}, []
    for kind_name, (kind, make, line) in SECRETS.items():
        found = 0
        for _ in range(per_type):
            path, host = rng.choice(hosts)
            value = make(rng)
            planted = insert(host, line(value), rng)
            text, counts = redact(planted)
            pieces = value.split("\\n")  # a private key's lines are redacted one by one
            found += all(p not in text for p in pieces) and counts.get(kind, 0) >= 1
            if parses(planted, path) and parses(text, path) is False:
                parse_broken.append((path, kind_name))
        by[kind_name] = {"planted": per_type, "found": found, "recall": round(found / per_type, 4)}
    altered, kinds = [], {}
    started = time.perf_counter()
    for path, text in controls:
        findings = find_secrets(text)
        if findings:
            altered.append(path)
            for f in findings:
                kinds[f.kind] = kinds.get(f.kind, 0) + 1
    seconds = time.perf_counter() - started
    for path, text in controls:
        if path in set(altered) and parses(text, path):
            if parses(redact(text)[0], path) is False:
                parse_broken.append((path, "control"))
    mb = sum(len(t.encode()) for _, t in controls) / 1e6
    examples = []
    for path, text in controls:
        for f in find_secrets(text)[:1]:
            examples.append((Path(path).name, f.kind, text[f.start:f.end][:60]))
        if len(examples) >= 15:
            break
    return {"recall": by, "control_files": len(controls),
            "control_files_altered": len(altered),
            "control_altered_rate": round(len(altered) / len(controls), 5),
            "control_findings_by_kind": kinds, "control_examples": examples,
            "redacted_files_that_stopped_parsing": parse_broken,
            "placeholders": PLACEHOLDER, "mb_per_s_per_core": round(mb / seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="folder of real code (default: data/corpus if "
                                                "it exists, else the stdlib and site-packages)")
    ap.add_argument("--files", type=int, default=3000, help="control files")
    ap.add_argument("--per-type", type=int, default=200, help="planted values per secret type")
    ap.add_argument("--benchmark", action="append", default=[], metavar="NAME=PATH",
                    help="another benchmark file (mbpp=…, humanevalplus=…, mbppplus=…, ds1000=…)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "safety.json"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    corpus = args.corpus or (ROOT / "data" / "corpus" if (ROOT / "data" / "corpus").exists()
                             else None)
    controls = corpus_files(corpus, args.files, rng)
    hosts = [(p, t) for p, t in controls if p.endswith(".py") and parses(t, p)]
    benchmarks = {"humaneval": None, **dict(b.split("=", 1) for b in args.benchmark)}
    items = load_benchmarks(benchmarks)
    result = {"machine": machine(), "corpus": str(corpus or "stdlib + site-packages"),
              "seed": args.seed,
              "benchmarks": sorted(benchmarks),
              "decontamination": bench_decontam(items, hosts, controls, rng),
              "secrets": bench_secrets(hosts, controls, args.per_type, rng)}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
