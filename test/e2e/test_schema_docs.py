"""The normalized event schema and its documentation agree.

(a) every ```json block in docs/events.md (WhatsApp), docs/genesys.md, docs/twilio.md and docs/generic.md is a
normalized event that validates against docs/schema/event.v1.json, and together the WhatsApp
blocks cover every kind and message type; (b) every expected document under
test/fixtures/<provider>/expected/ (the unit tests compare each normalizer's output with these
files) validates too; (c) the schema really rejects broken events, also one provider's event
labelled as another's.
Run: /usr/bin/python3 -m pytest test/e2e/test_schema_docs.py
"""
import copy
import json
import pathlib
import re

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "docs" / "schema" / "event.v1.json"
DOC_PATH = ROOT / "docs" / "events.md"
EXPECTED_DIR = ROOT / "test" / "fixtures" / "whatsapp" / "expected"
PROVIDER_DOCS = {"whatsapp": DOC_PATH, "genesys": ROOT / "docs" / "genesys.md",
                 "twilio": ROOT / "docs" / "twilio.md", "generic": ROOT / "docs" / "generic.md"}

MESSAGE_TYPES = {"text", "image", "video", "audio", "document", "sticker", "location", "contacts",
                 "interactive", "button", "reaction", "order", "system", "unsupported", "unknown"}
STATUS_TYPES = {"sent", "delivered", "read", "played", "failed"}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def doc_blocks(path=DOC_PATH):
    text = path.read_text()
    return re.findall(r"^```json\n(.*?)^```", text, flags=re.S | re.M)


def expected_dir(provider):
    return ROOT / "test" / "fixtures" / provider / "expected"


def expected_docs():
    out = []
    for path in sorted(p for prov in PROVIDER_DOCS for p in expected_dir(prov).glob("*.json")):
        data = json.loads(path.read_text())
        for i, doc in enumerate(data if isinstance(data, list) else [data]):
            out.append(pytest.param(doc, id=f"{path.parent.parent.name}-{path.stem}[{i}]"))
    return out


def assert_valid(validator, doc):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{e.json_path}: {e.message[:200]}" for e in errors[:5])


@pytest.mark.parametrize("provider,index", [(p, i) for p, path in PROVIDER_DOCS.items()
                                              for i in range(len(doc_blocks(path)))])
def test_doc_example_validates(validator, provider, index):
    doc = json.loads(doc_blocks(PROVIDER_DOCS[provider])[index])
    assert doc["provider"] == provider
    assert_valid(validator, doc)


@pytest.mark.parametrize("provider", ["genesys", "twilio"])
def test_provider_docs_have_examples(provider):
    blocks = [json.loads(b) for b in doc_blocks(PROVIDER_DOCS[provider])]
    kinds = {d["kind"] for d in blocks}
    assert len(blocks) >= 4 and len(kinds) >= 4, f"{provider}: examples cover only {sorted(kinds)}"


def test_doc_examples_cover_every_type():
    seen = set()
    for block in doc_blocks():
        doc = json.loads(block)
        seen.add((doc["kind"], doc["type"]))
    assert len(doc_blocks()) >= 20
    for t in MESSAGE_TYPES:
        assert ("message", t) in seen, f"no example for message type {t}"
    for t in STATUS_TYPES:
        assert ("status", t) in seen, f"no example for status {t}"
    assert any(k == "error" for k, _ in seen)
    assert any(k == "system" for k, _ in seen)


@pytest.mark.parametrize("provider", list(PROVIDER_DOCS))
def test_doc_examples_match_expected_files(provider):
    """The examples are the normalizer's real output (the unit tests hold it to these files)."""
    expected = {}
    for path in expected_dir(provider).glob("*.json"):
        data = json.loads(path.read_text())
        for doc in data if isinstance(data, list) else [data]:
            expected[doc["event_id"]] = doc
    for block in doc_blocks(PROVIDER_DOCS[provider]):
        doc = json.loads(block)
        assert expected.get(doc["event_id"]) == doc, f"example {doc['event_id']} is not a normalizer output"


@pytest.mark.parametrize("doc", expected_docs())
def test_expected_file_validates(validator, doc):
    assert_valid(validator, doc)


def test_expected_files_exist():
    assert len(list(EXPECTED_DIR.glob("*.json"))) >= 36


def first_expected(name):
    provider, _, stem = name.rpartition("/")
    data = json.loads((expected_dir(provider or "whatsapp") / f"{stem}.json").read_text())
    return data[0] if isinstance(data, list) else data


@pytest.mark.parametrize("name,mutate", [
    ("text", lambda d: d.pop("raw")),
    ("text", lambda d: d.update(extra=1)),
    ("text", lambda d: d["content"].update(bodyy="x")),
    ("text", lambda d: d.update(schema_version="2")),
    ("text", lambda d: d.update(occurred_at="2025-02-12 00:43:44")),
    ("text", lambda d: d["customer"].update(phone="16505551234")),
    ("text", lambda d: d["customer"].update(region="usa")),
    ("text", lambda d: d.update(type="selfie")),
    ("audio_voice", lambda d: d["content"].pop("voice")),
    ("reaction", lambda d: d["content"].update(removed=True)),
    ("reaction_removed", lambda d: d["content"].update(removed=False)),
    ("status_sent", lambda d: d["content"]["conversation"].update(expiration_timestamp="1739407440")),
    ("status_sent", lambda d: d.update(event_id="wamid.no-status")),
    ("errors_value", lambda d: d.update(errors=[])),
    ("account_update", lambda d: d["content"].pop("field")),
    ("interactive_nfm_reply", lambda d: d["content"].pop("response")),
    ("location_full", lambda d: d["content"].update(latitude="37.4")),
    ("text", lambda d: d.update(provider="genesys")),
    ("text", lambda d: d.update(provider="smoke-signals")),
    ("genesys/text_inbound", lambda d: d.update(provider="whatsapp")),
    ("genesys/text_inbound", lambda d: d.pop("conversation")),
    ("genesys/receipt_failed", lambda d: d.update(kind="status")),
    ("twilio/sms_inbound", lambda d: d.update(kind="receipt")),
    ("twilio/sms_inbound", lambda d: d["customer"].update(phone="15551234567")),
    ("generic/stripe_invoice_paid", lambda d: d.update(kind="status")),
    ("generic/stripe_invoice_paid", lambda d: d.pop("source")),
    ("generic/github_push", lambda d: d.update(type="Push")),
])
def test_schema_rejects(validator, name, mutate):
    doc = copy.deepcopy(first_expected(name))
    assert_valid(validator, doc)
    mutate(doc)
    assert list(validator.iter_errors(doc)), f"schema accepted a broken {name} event"


# --------------------------------------------------------------------------- configuration docs

def conf_table_keys():
    """(section, key) of every row of the key tables in src/conf/conf.c (the loader's truth)."""
    src = (ROOT / "src" / "conf" / "conf.c").read_text()
    rows = re.findall(r'^\s*\{ "([a-z_]+)", "([a-z_0-9]+)", KEY_', src, re.M)
    assert len(rows) > 40, "the key table was not found in src/conf/conf.c"
    return rows


def sections_of(text, header_re):
    """{section name: text of that section} for headers matching header_re (group 1 = name)."""
    out, name, buf = {}, None, []
    for line in text.splitlines():
        m = re.match(header_re, line)
        if m:
            if name:
                out[name] = "\n".join(buf)
            name, buf = m.group(1), []
        elif name:
            buf.append(line)
    if name:
        out[name] = "\n".join(buf)
    return out


@pytest.mark.parametrize("section,key", conf_table_keys())
def test_every_key_is_documented(section, key):
    docs = sections_of((ROOT / "docs" / "configuration.md").read_text(), r"^### \[([a-z_]+)")
    assert section in docs, f"docs/configuration.md has no ### [{section}] section"
    assert re.search(rf"^\| {key} \|", docs[section], re.M), f"[{section}] {key} is not in docs/configuration.md"


@pytest.mark.parametrize("section,key", [r for r in conf_table_keys() if r[0] not in ("tenant", "rules")])
def test_every_key_is_in_the_example_file(section, key):
    # Fixed sections by their header; [source.<name>] and [endpoint.<name>] by their (commented)
    # example sections.
    conf = sections_of((ROOT / "conf" / "hookgate.conf").read_text(),
                       r"^(?:;\[(?=source\.|endpoint\.)|\[(?=[a-z_]+\]))([a-z_]+)")
    assert section in conf, f"conf/hookgate.conf has no [{section}] section"
    assert re.search(rf"^;?{key}(_file)? =", conf[section], re.M), f"[{section}] {key} is not in conf/hookgate.conf"
