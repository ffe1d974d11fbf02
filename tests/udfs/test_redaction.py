"""udfs.redaction: every secret type found and redacted, look-alikes left alone, and redacted code
that parsed before still parses in every language with a grammar."""

from __future__ import annotations

import pytest

from udfs.redaction import EMAIL, IP_ADDRESS, KEY, PASSWORD, find_secrets, redact, secret_share
from udfs.syntax import GRAMMARS, parse

# values built from parts so that no scanner mistakes this file for a leak
GITHUB = "ghp_" + "R4nd0mT0k3nV4lu3" * 2 + "Abcd"
GITLAB = "glpat-" + "Zx9Kq2Lmw7Pv8Rt3Yu6N"
SLACK = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
OPENAI = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5q" + "T3BlbkFJ" + "Qr8sTu1vWx4yZa7bCd0e"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
AWS_ID = "AKIA" + "Q3EGUJ5WXYZ7ABCD"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYzx8QeKq2Lm"  # 40 characters
KEY_BODY = "MIIEowIBAAKCAQEA" + "q2Lmw7Pv8Rt3Yu6NZx9K" * 3
ANTHROPIC = "sk-ant-" + "api03-" + "Zx9Kq2Lmw7Pv8Rt3Yu6N" * 4 + "Ab-_9xQwErTyUiOpAA"
HF = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"  # 34 letters
PYPI = "pypi-" + "AgEIcHlwaS5vcmc" + "CJDk4ZjM1YzQ2LTFhNDEtNGQ2Yi1iOGE3LTk1NjJmNzFk"
NPM = "npm_" + "Zx9Kq2Lmw7Pv8Rt3Yu6NAb3dEf6hIj9kLm2n"
SENDGRID = "SG." + "Zx9Kq2Lmw7Pv8Rt3Yu6N-_" + "." + "Ab3dEf6hIj9kLm2nOp5qT3BlbkFJQr8sTu1vWx4yZa7"
DATABRICKS = "dapi" + "0f3a9c2e7b1d4856" * 2
DIGITALOCEAN = "dop_" + "v1_" + "9c2e7b1d48560f3a" * 4
SHOPIFY = "shpat_" + "7b1d48560f3a9c2e" * 2
TWILIO = "SK" + "48560f3a9c2e7b1d" * 2
AZURE = "Zx9Kq2Lmw7Pv8Rt3Yu6N+/" * 3 + "Ab3dEf6hIj9kLm2nOp5q" + "=="  # 86 + ==
BEARER = "Qw3rTy7uIo9pAs2dFg5hJk8lZx1cVb4n"


@pytest.mark.parametrize("line, kind, secret", [
    (f'token = "{GITHUB}"', KEY, GITHUB),
    (f'GITLAB = "{GITLAB}"', KEY, GITLAB),
    (f'slack: "{SLACK}"', KEY, SLACK),
    (f'stripe.api_key = "{STRIPE}"', KEY, STRIPE),
    (f'const maps = "{GOOGLE}";', KEY, GOOGLE),
    (f'client = OpenAI(api_key="{OPENAI}")', KEY, OPENAI),
    (f'headers = {{"Authorization": "Bearer {JWT}"}}', KEY, JWT),
    (f'aws_access_key_id = "{AWS_ID}"', KEY, AWS_ID),
    (f'aws_secret_access_key = "{AWS_SECRET}"', KEY, AWS_SECRET),
    ('DATABASE_URL = "postgres://admin:Zq8!vR2mK9@db.acme-corp.io:5432/app"', PASSWORD,
     "Zq8!vR2mK9"),
    ('db_password = "S3cr3t!pa55word"', PASSWORD, "S3cr3t!pa55word"),
    ('# maintainer: jane.doe@acme-corp.com', EMAIL, "jane.doe@acme-corp.com"),
    ('SERVER = "8.8.4.4"', IP_ADDRESS, "8.8.4.4"),
    ('upstream = "2001:4860:4860::8844"', IP_ADDRESS, "2001:4860:4860::8844"),
    # found by their issuer's format alone: no credential word on the line
    (f'client = Anthropic("{ANTHROPIC}")', KEY, ANTHROPIC),
    (f'login("{HF}")', KEY, HF),
    (f'cmd = ["twine", "upload", "-p", "{PYPI}"]', KEY, PYPI),
    (f'NPMRC = "//registry.npmjs.org/:_auth={NPM}"', KEY, NPM),
    (f'mail = SendGridAPIClient("{SENDGRID}")', KEY, SENDGRID),
    (f'w = WorkspaceClient(host=HOST, pat="{DATABRICKS}")', KEY, DATABRICKS),
    (f'do = Manager("{DIGITALOCEAN}")', KEY, DIGITALOCEAN),
    (f'shop = Session(URL, "2024-01", "{SHOPIFY}")', KEY, SHOPIFY),
    (f'client = Client("{TWILIO}", SECRET, ACCOUNT)', KEY, TWILIO),
    (f'CONN = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey={AZURE};Suffix=x"', KEY,
     AZURE),
    (f'HEADERS = {{"Authorization": "Bearer {BEARER}"}}', KEY, BEARER),
    # configuration's bare values (YAML, .env), and a hyphenated header name
    ("  secret_key: Xk29qLm4PzR7wT1v", PASSWORD, "Xk29qLm4PzR7wT1v"),
    ("export DB_PASSWORD=Xk29!qLm4Pz", PASSWORD, "Xk29!qLm4Pz"),
    ('requests.get(url, headers={"x-api-key": "HVDctQUy1xvCkgaf"})', PASSWORD,
     "HVDctQUy1xvCkgaf"),
])
def test_each_type_is_found_and_redacted(line, kind, secret):
    [finding] = find_secrets(line)
    assert (finding.kind, line[finding.start:finding.end]) == (kind, secret)
    text, counts = redact(line)
    assert secret not in text and counts == {kind: 1}
    placeholder = {EMAIL: "<EMAIL>", IP_ADDRESS: "<IP_ADDRESS>", KEY: "<KEY>",
                   PASSWORD: "<PASSWORD>"}[kind]
    assert text == line.replace(secret, placeholder)


def test_private_key_block_payload_is_redacted_line_by_line():
    block = ('PEM = """-----BEGIN RSA PRIVATE KEY-----\n' + KEY_BODY + "\n" + KEY_BODY[::-1]
             + '\n-----END RSA PRIVATE KEY-----"""\n')
    text, counts = redact(block)
    assert text == ('PEM = """-----BEGIN RSA PRIVATE KEY-----\n<KEY>\n<KEY>\n'
                    '-----END RSA PRIVATE KEY-----"""\n')
    assert counts == {KEY: 2}


@pytest.mark.parametrize("line", [
    'author_email = "someone@example.com"',  # documentation domains stay
    'url = "git@github.com:org/repo.git"',
    'icon = "logo@2x.png"',
    'local = "192.168.1.10"; loop = "127.0.0.1"; doc = "203.0.113.7"; v6 = "::1"',
    'version = "1.2.3.4"',  # a version, not an address
    'evens = values[::2] + values[1::2]',  # slices, not IPv6
    'when = "12:30:45"',
    'commit = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"',  # a git SHA
    '"integrity": "sha512-' + "a" * 86 + '=="',  # a lockfile hash
    'request_id = "123e4567-e89b-12d3-a456-426614174000"',  # a UUID
    'password = "password"',  # not a credential anyone chose
    'token = os.environ["API_TOKEN"]',
    'password = "<your password here>"',
    'SECRET_SCOPE = "DEPLOYMENT_RESOURCE_TYPE_SECRET_SCOPE"',  # an enum value
    'api_key = get_key(settings)',
    'secret = "${SECRET}"',
    # bare values that code and documentation write where configuration writes secrets
    'API_KEY=config.api_key_v2',
    'secret: process.env.SECRET',
    '    token: _StrPathToken',
    '        with_added_tokens: boolean:',
    'token = token_v2_backup_x',
    '  password: ${DB_PASSWORD}',
    'headers = {"Authorization": "Bearer your_access_token_here"}',
    'headers = {"Authorization": f"Bearer {self.access_token}"}',
    'hf_hub_download_with_cache = hf_hub_download',
    'TASK_SKIP = "SKIP_TASK_0f3a9c2e7b1d48560f3a9c2e7b1d4856x"',
])
def test_look_alikes_are_left_alone(line):
    assert find_secrets(line) == [] and redact(line) == (line, {})


def test_share_of_secrets():
    text = f'a = "{GITHUB}"\n'
    findings = find_secrets(text)
    assert secret_share(text, findings) == pytest.approx(len(GITHUB) / len(text))


SNIPPETS = {
    "python": 'API_KEY = "{k}"  # ask jane.doe@acme-corp.com\nHOST = "{ip}"\n',
    "javascript": 'const key = "{k}"; // jane.doe@acme-corp.com\nconst host = \'{ip}\';\n',
    "typescript": 'const key: string = "{k}"; // jane.doe@acme-corp.com\nlet h = "{ip}";\n',
    "tsx": 'const key = "{k}";\nconst el = <a href="mailto:jane.doe@acme-corp.com">{{"{ip}"}}</a>;\n',
    "go": 'package main\n\nconst key = "{k}" // jane.doe@acme-corp.com\nvar host = `{ip}`\n',
    "rust": 'const KEY: &str = "{k}"; // jane.doe@acme-corp.com\nconst HOST: &str = "{ip}";\n',
    "java": 'class C {{ String key = "{k}"; /* jane.doe@acme-corp.com */ String h = "{ip}"; }}\n',
    "c": 'const char *key = "{k}"; /* jane.doe@acme-corp.com */\nconst char *h = "{ip}";\n',
    "cpp": 'auto key = std::string("{k}"); // jane.doe@acme-corp.com\nauto h = "{ip}";\n',
}


@pytest.mark.parametrize("grammar", sorted(GRAMMARS))
def test_redacted_code_still_parses(grammar):
    code = SNIPPETS[grammar].format(k=GITHUB, ip="8.8.4.4")
    before = parse(code.encode(), grammar)
    assert not before.root_node.has_error, grammar
    text, counts = redact(code)
    assert counts == {KEY: 1, EMAIL: 1, IP_ADDRESS: 1}, text
    after = parse(text.encode(), grammar)
    assert not after.root_node.has_error, (grammar, text)


@pytest.mark.parametrize("line", [
    'dsn = "postgresql://user:password@localhost/db"',  # documentation's placeholder password
    'token = "layer_token_lr_schedule"',  # a snake_case name
])
def test_documentation_placeholders_and_names_are_left_alone(line):
    assert find_secrets(line) == []


@pytest.mark.parametrize("line", [
    'url = "http://user:pass@proxy.local:3128"',
    'GRANT = "urn:ietf:params:oauth:token-type:jwt"',
])
def test_placeholder_words_and_urns_are_left_alone(line):
    assert find_secrets(line) == []
