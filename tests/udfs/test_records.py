from __future__ import annotations

import hashlib
import json

import pytest

from udfs.languages import language_for_path
from udfs.licenses import is_license_file, license_from_metadata, license_from_text, repo_license
from udfs.records import decode_source, file_id, parse_stack_line, preview

GOOD = {"text": "print(1)\n", "language": "Python", "license": "MIT", "stars": 12,
        "path": "a.py", "repo": "o/r"}


def test_good_record_is_normalized():
    record, error = parse_stack_line(json.dumps(GOOD))
    assert error is None
    assert record == {**GOOD, "language": "python", "license": "mit"}


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "not_an_object: got list"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "repo"}), "missing_field: repo"),
        (json.dumps({**GOOD, "stars": "many"}), "mistyped_field: stars should be int, got str"),
        (json.dumps({**GOOD, "stars": True}), "mistyped_field: stars should be int, got bool"),
        (json.dumps({**GOOD, "text": 5}), "mistyped_field: text should be str, got int"),
        (json.dumps({**GOOD, "text": ""}), "empty_field: text"),
    ],
)
def test_bad_records_name_the_problem(line, error):
    record, got = parse_stack_line(line)
    assert record is None
    assert got.startswith(error)


def test_optional_fields_and_integral_float_stars():
    record, _ = parse_stack_line(json.dumps({**GOOD, "license": None, "stars": 7.0}))
    assert record["license"] is None and record["stars"] == 7


STACK_V1 = {"content": "print(1)\n", "lang": "Python", "max_stars_repo_name": "o/r",
            "max_stars_repo_path": "a.py", "max_stars_count": 12.0,
            "max_stars_repo_licenses": ["MIT", "Apache-2.0"], "hexsha": "0" * 40}
V1_COLUMNS = {"text": "content", "language": "lang", "repo": "max_stars_repo_name",
              "path": "max_stars_repo_path", "stars": "max_stars_count",
              "license": "max_stars_repo_licenses"}


def test_columns_map_another_corpus_and_errors_name_its_columns():
    record, error = parse_stack_line(json.dumps(STACK_V1), V1_COLUMNS)
    assert error is None
    assert record == {"text": "print(1)\n", "language": "python", "license": "mit and apache-2.0",
                      "stars": 12, "path": "a.py", "repo": "o/r"}
    # a missing count written by pandas (NaN) is unknown, not mistyped
    record, _ = parse_stack_line(json.dumps({**STACK_V1, "max_stars_count": float("nan")}),
                                 V1_COLUMNS)
    assert record["stars"] is None
    assert parse_stack_line(json.dumps({**STACK_V1, "content": None}), V1_COLUMNS) == (
        None, "missing_field: content")
    assert parse_stack_line(json.dumps({**STACK_V1, "max_stars_repo_licenses": []}),
                            V1_COLUMNS)[0]["license"] is None
    assert parse_stack_line(json.dumps({**STACK_V1, "max_stars_repo_licenses": [1]}),
                            V1_COLUMNS)[1] == ("mistyped_field: max_stars_repo_licenses should "
                                               "be str, got list")


def test_decode_source():
    assert decode_source("é = 1\n".encode()) == ("é = 1\n", None)
    assert decode_source(b"\xef\xbb\xbfx = 1\n") == ("x = 1\n", None)
    assert decode_source(b"x = '\xff'\n")[1] == "invalid_utf8: invalid start byte at byte 5"
    assert decode_source(b"\x7fELF\x00\x00")[1].startswith("binary_file")


def test_file_id_is_sha256_of_repo_path_content():
    want = hashlib.sha256(b"o/r\x00a.py\x00x = 1\n").hexdigest()
    assert file_id("o/r", "a.py", b"x = 1\n") == want
    assert file_id("o/r", "b.py", b"x = 1\n") != want


def test_preview_truncates():
    assert preview("abcdef", 3) == "abc…"
    assert preview(b"ab\xff", 10) == "ab\ufffd"


def test_languages_by_extension():
    assert [language_for_path(p) for p in ("a.py", "b.TSX", "c.h", "d.hpp", "e.rs", "f.txt")] == [
        "python", "typescript", "c", "cpp", "rust", None]


MIT = "Permission is hereby granted, free of charge, to any person obtaining a copy"
BSD3 = ("Redistribution and use in source and binary forms, with or without modification ...\n"
        "Neither the name of the copyright holder nor the names of its contributors")


def test_license_texts():
    assert license_from_text(MIT) == "mit"
    assert license_from_text(BSD3) == "bsd-3-clause"
    assert license_from_text(BSD3.splitlines()[0]) == "bsd-2-clause"
    assert license_from_text("Apache License\n Version 2.0, January 2004") == "apache-2.0"
    assert license_from_text("all rights reserved") is None
    # A bundle: the main license comes first, vendored ones after it.
    assert license_from_text(BSD3 + "\n\nApache License Version 2.0\n" + MIT) == "bsd-3-clause"


def test_license_metadata_evidence_order():
    meta = "Metadata-Version: 2.4\nName: x\nLicense-Expression: MIT OR Apache-2.0\n\nbody"
    assert license_from_metadata(meta) == ("mit", None)
    meta = ("Metadata-Version: 2.1\nName: x\nLicense: UNKNOWN\n"
            "Classifier: License :: OSI Approved :: BSD License\n"
            "Classifier: License :: OSI Approved :: Apache Software License\n")
    assert license_from_metadata(meta) == (None, "apache-2.0")
    # expression beats file text beats the free-text field
    assert repo_license([("x-1.dist-info/METADATA", "License: MIT\n"),
                         ("LICENSE", BSD3)]) == "bsd-3-clause"
    assert repo_license([("x-1.dist-info/METADATA", "License-Expression: ISC\n"),
                         ("LICENSE", BSD3)]) == "isc"


def test_which_files_are_license_evidence():
    assert is_license_file("LICENSE") and is_license_file("COPYING.txt")
    assert is_license_file("pkg-1.0.dist-info/LICENSE.md")
    assert not is_license_file("pkg/_vendor/LICENSE")
    assert not is_license_file("license_checker.py")


@pytest.mark.parametrize("suffix, codec", [(".gz", "gzip"), (".bz2", "bz2"), (".zst", "zstd"),
                                           (".xz", None)])
def test_compressed_lines_split_like_a_text_reader(tmp_path, suffix, codec):
    """Lines end at \\n (a \\r before it dropped), a last line needs none, and a line longer
    than one read (3 bytes here) comes whole."""
    import lzma

    import pyarrow as pa

    from udfs.records import compressed_lines

    data = b'{"a": 1}\r\n\nlonger than one read\n{"b": 2}'
    path = tmp_path / f"part{suffix}"
    if codec:
        with pa.output_stream(str(path), compression=codec) as f:
            f.write(data)
    else:
        path.write_bytes(lzma.compress(data))
    assert list(compressed_lines(str(path), read_bytes=3)) == [
        b'{"a": 1}', b"", b"longer than one read", b'{"b": 2}']
