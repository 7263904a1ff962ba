"""Ingestion: every supported file type, encodings, and every class of bad input for CPT.

Each bad file or line must show up in the report with its file (and line), what is wrong and a fix,
while the good files around it still load.
"""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
from conftest_data import cfg, doc

from forgellm.data import prepare, scan_files
from forgellm.data.htmltext import visible_text
from forgellm.data.ingest import decode, discover, read_documents, sniff
from forgellm.data.records import Problems
from forgellm.errors import ForgeError


def docs_of(path, text_field="text"):
    """(documents, problems) read from one file the way prepare reads it."""
    problems = Problems()
    entry = sniff(path)
    found = [d.text for d in read_documents(entry, text_field, problems)] if entry.status == "read" else []
    return found, problems, entry


def test_text_markdown_rst_and_code_are_one_document_each(tmp_path):
    for name in ("a.txt", "b.md", "c.rst", "d.py", "Makefile"):
        (tmp_path / name).write_text(f"content of {name}\r\nsecond line\n", encoding="utf-8")
        found, problems, entry = docs_of(tmp_path / name)
        assert found == [f"content of {name}\nsecond line"] and entry.kind == "text" and not problems.items


def test_json_list_of_strings_and_of_objects(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(["one", "two", ""]))
    (tmp_path / "o.json").write_text(json.dumps([{"body": "x"}, {"body": "y"}, {"other": 1}]))
    assert docs_of(tmp_path / "s.json")[0] == ["one", "two", ""]  # empty is counted later, not a problem
    found, problems, _ = docs_of(tmp_path / "o.json", "body")
    assert found == ["x", "y"]
    (p,) = problems.items
    assert p.line == 3 and "no 'body' field" in p.what and p.fix


def test_jsonl_with_configurable_field_and_bad_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        '{"content": "first"}',
        "",
        "{not json",
        '{"content": 5}',
        '{"title": "t"}',
        '"bare string"',
        '{"content": "last"}',
    ]
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    found, problems, _ = docs_of(path, "content")
    assert found == ["first", "bare string", "last"]
    by_line = {p.line: p for p in problems.items}
    assert set(by_line) == {3, 4, 5}
    assert "not valid JSON" in by_line[3].what
    assert "must be a string" in by_line[4].what
    assert "no 'content' field" in by_line[5].what and "text_field: title" in by_line[5].fix


def test_csv_and_tsv_text_column(tmp_path):
    (tmp_path / "d.csv").write_text('id,text\n1,"hello, world"\n2,"multi\nline"\n3,\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text("text\tid\nalpha\t1\n", encoding="utf-8")
    assert docs_of(tmp_path / "d.csv")[0] == ["hello, world", "multi\nline", ""]
    assert docs_of(tmp_path / "d.tsv")[0] == ["alpha"]
    (tmp_path / "bad.csv").write_text("id,body\n1,x\n")
    found, problems, entry = docs_of(tmp_path / "bad.csv")
    assert found == [] and entry.status == "skipped"
    assert "no 'text' column (columns: id, body)" in problems.items[0].what and "text_field" in problems.items[0].fix


def test_html_keeps_visible_text_only():
    html = """<html><head><title>T</title><style>p {color: red}</style></head>
    <body><script>var x = 1;</script><h1>Hive&nbsp;notes</h1><p>Bees &amp; honey</p><p>second<br>line</p>
    <!-- a comment --><noscript>enable js</noscript></body></html>"""
    assert visible_text(html) == "Hive notes\n\nBees & honey\n\nsecond\nline"


def test_encodings_bom_utf16_and_legacy(tmp_path):
    text = "Café crème: brûlée"
    assert decode(("\ufeff" + text).encode("utf-8")) == (text, "utf-8-sig")
    assert decode(text.encode("utf-16")) == (text, "utf-16")
    decoded, encoding = decode(("Der Bienenstock ist groß und schön, sagte Müller. " * 4).encode("cp1252"))
    assert "groß und schön" in decoded and encoding not in ("utf-8", "utf-8-sig")
    (tmp_path / "legacy.txt").write_bytes(("Le rucher était très calme, déjà à l'aube. " * 4).encode("cp1252"))
    found, problems, entry = docs_of(tmp_path / "legacy.txt")
    assert "déjà" in found[0] and "not UTF-8" in entry.reason and not problems.items


def test_scan_files_lists_status_per_file(tmp_path, monkeypatch):
    # pypdf is an optional extra, not a dependency. None in sys.modules makes `import pypdf` raise
    # ImportError exactly as on a machine without it, so the "not installed" branch is tested whether or
    # not this environment has pypdf (the installed branch: test_pdf_and_docx_go_through_...).
    monkeypatch.setitem(sys.modules, "pypdf", None)
    (tmp_path / "ok.md").write_text("# hi")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "pic.png").write_bytes(b"\x89PNG")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4 ...")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("never read")
    entries = {e.path.rsplit("/", 1)[-1]: e for e in scan_files(tmp_path)}
    assert set(entries) == {"ok.md", "empty.txt", "blob.txt", "pic.png", "doc.pdf"}
    assert entries["ok.md"].status == "read"
    assert entries["empty.txt"].reason == "empty file"
    assert entries["blob.txt"].reason == "binary file (not text)"
    assert "unsupported file type '.png'" in entries["pic.png"].reason
    assert entries["doc.pdf"].status == "skipped"
    assert entries["doc.pdf"].reason == "reading .pdf needs the optional package: pip install pypdf"
    assert {e.path.rsplit("/", 1)[-1] for e in scan_files(tmp_path, train_type="ift") if e.status == "read"} == set()


def test_bad_files_are_reported_and_the_rest_still_loads(tmp_path, wtok):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(4):
        (root / f"good{i}.txt").write_text(doc(f"doc{i}", 40))
    (root / "empty.md").write_text("")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (root / "broken.json").write_text('[{"text": "unterminated')
    (root / "lines.jsonl").write_text('{"text": "doc9 w1 w2"}\n{oops\n')
    (root / "wrong.csv").write_text("a,b\n1,2\n")
    (root / "archive.zip").write_bytes(b"PK\x03\x04")
    r = prepare(cfg(data=root, max_seq_length=8), wtok, cache_dir=tmp_path / "cache").report
    assert r["documents"]["kept"] == 5
    skipped = {f["path"].rsplit("/", 1)[-1]: f["reason"] for f in r["files"] if f["status"] == "skipped"}
    assert set(skipped) == {"empty.md", "binary.txt", "broken.json", "wrong.csv", "archive.zip"}
    problems = {(p["file"].rsplit("/", 1)[-1], p["line"]): p for p in r["problems"]}
    assert ("lines.jsonl", 2) in problems and ("broken.json", None) in problems
    assert all(p["what"] and p["fix"] for p in r["problems"])
    assert r["files_summary"]["skipped_by_reason"]["binary file"] == 1


def test_nothing_usable_and_missing_paths_stop_before_training(tmp_path, wtok):
    root = tmp_path / "c"
    root.mkdir()
    (root / "empty.txt").write_text("")
    (root / "x.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ForgeError, match="no usable documents") as e:
        prepare(cfg(data=root), wtok, cache_dir=tmp_path / "cache")
    assert "2 file(s) found, 2 skipped" in e.value.what and e.value.fix
    with pytest.raises(ForgeError, match="does not exist") as e:
        prepare(cfg(data=tmp_path / "nope"), wtok, cache_dir=tmp_path / "cache")
    assert "nope" in e.value.where
    (root / "ok.txt").write_text(doc("doc1", 50))
    (root / "ok2.txt").write_text(doc("doc2", 50))
    with pytest.raises(ForgeError, match="does not exist") as e:
        prepare(cfg(data=root, mixture={"general": str(tmp_path / "gone")}), wtok, cache_dir=tmp_path / "cache")
    assert e.value.where.startswith("mixture.general")


def test_relative_paths_resolve_against_the_project_not_the_working_directory(tmp_path, monkeypatch):
    from forgellm.data.ingest import as_paths
    from forgellm.paths import PROJECT_ROOT

    # A decoy at the same relative path under the working directory, and a file only the cwd has.
    (tmp_path / "forgellm" / "data").mkdir(parents=True)
    (tmp_path / "forgellm" / "data" / "__init__.py").write_text("decoy")
    (tmp_path / "only_in_cwd.txt").write_text("not in the project")
    monkeypatch.chdir(tmp_path)
    assert scan_files("forgellm/data/__init__.py")[0].path == str(PROJECT_ROOT / "forgellm/data/__init__.py")
    found = discover(as_paths("forgellm/data"))
    assert PROJECT_ROOT / "forgellm/data/ingest.py" in found and all(p.is_relative_to(PROJECT_ROOT) for p in found)
    with pytest.raises(ForgeError, match="does not exist") as e:
        scan_files("only_in_cwd.txt")
    assert str(PROJECT_ROOT / "only_in_cwd.txt") in e.value.where


def test_garbage_never_raises_anything_but_forge_error(tmp_path, wtok):
    rng = random.Random(0)
    root = tmp_path / "c"
    root.mkdir()
    for i, suffix in enumerate([".txt", ".json", ".jsonl", ".csv", ".html", ".md", ".tsv", ".rst"] * 2):
        (root / f"g{i}{suffix}").write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
    (root / "weird.json").write_text("42")
    (root / "nested.jsonl").write_text('[1, 2]\n{"text": {"a": 1}}\nnull\n')
    for i in range(3):
        (root / f"ok{i}.txt").write_text(doc(f"doc{i}", 60))
    # Three good documents are enough to train on: the garbage must not stop the build (no early return).
    p = prepare(cfg(data=root, max_seq_length=8), wtok, cache_dir=tmp_path / "cache")
    assert p.train.rows > 0 and np.asarray(p.train.tokens).dtype == np.int32
    r = p.report
    vocab = wtok.get_vocab()
    rows = set(np.asarray(p.train.tokens).ravel().tolist()) | set(np.asarray(p.val.tokens).ravel().tolist())
    assert {vocab[f"doc{i}"] for i in range(3)} <= rows, "every good document reaches the data"
    assert r["files_summary"]["found"] == 21
    assert all(f["reason"] for f in r["files"] if f["status"] == "skipped")
    problems = {(q["file"].rsplit("/", 1)[-1], q["line"]): q["what"] for q in r["problems"]}
    assert problems == {
        ("weird.json", 1): "'text' must be a string, got int",
        ("nested.jsonl", 1): "'text' must be a string, got list",
        ("nested.jsonl", 2): "'text' must be a string, got dict",
        ("nested.jsonl", 3): "'text' must be a string, got NoneType",
    }


def test_pdf_and_docx_go_through_their_optional_libraries(tmp_path, monkeypatch):
    """The readers call pypdf / python-docx when installed (faked here: neither is a dependency; the real
    pypdf is used by test_a_real_pdf_is_read_with_pypdf where it is installed)."""
    import types

    class Page:
        def __init__(self, text):
            self.text = text

        def extract_text(self):
            return self.text

    pypdf = types.SimpleNamespace(
        PdfReader=lambda path: types.SimpleNamespace(pages=[Page("Page one."), Page(None), Page("Page two.")])
    )
    docx = types.SimpleNamespace(
        Document=lambda path: types.SimpleNamespace(paragraphs=[Page("Title"), Page("Body text.")])
    )
    monkeypatch.setitem(sys.modules, "pypdf", types.ModuleType("pypdf"))
    monkeypatch.setitem(sys.modules, "docx", types.ModuleType("docx"))
    sys.modules["pypdf"].PdfReader = pypdf.PdfReader
    sys.modules["docx"].Document = docx.Document
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4 fake")
    (tmp_path / "b.docx").write_bytes(b"PK\x03\x04 fake")
    assert [e.status for e in scan_files([tmp_path / "a.pdf", tmp_path / "b.docx"])] == ["read", "read"]
    assert docs_of(tmp_path / "a.pdf")[0] == ["Page one.\n\nPage two."]
    assert docs_of(tmp_path / "b.docx")[0] == ["Title\nBody text."]
    sys.modules["pypdf"].PdfReader = lambda path: (_ for _ in ()).throw(ValueError("EOF marker not found"))
    found, problems, entry = docs_of(tmp_path / "a.pdf")
    assert found == [] and entry.status == "skipped" and "EOF marker not found" in problems.items[0].what


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose page shows `lines` (Helvetica), with a correct cross-reference table."""
    text = " ".join(f"({line}) Tj T*" for line in lines)
    stream = f"BT /F1 12 Tf 14 TL 72 720 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_real_pdf_is_read_with_pypdf(tmp_path):
    """The installed branch with the real library (pypdf is optional: skipped where it is not installed)."""
    pytest.importorskip("pypdf")
    (tmp_path / "hive.pdf").write_bytes(minimal_pdf(["Bees make honey.", "The queen lays eggs."]))
    found, problems, entry = docs_of(tmp_path / "hive.pdf")
    assert entry.status == "read" and not problems.items
    assert len(found) == 1 and "Bees make honey." in found[0] and "The queen lays eggs." in found[0]
