"""The one FASTA and CSV reader (``logos_jax.raw_text``), as the builder and ``grammar encode`` see it."""

import csv

import pytest

from logos_jax.raw_text import NOT_TEXT, CsvRows, fasta_records


def numbered(*lines):
    return list(enumerate(lines, 1))


def test_fasta_records_join_lines_and_reject_a_record_with_bad_bytes():
    lines = numbered("ignored\n", ">a\n", "MK\n", "\n", "LV\n", ">b\n", None, "AA\n", ">c\n")
    assert list(fasta_records(lines)) == [(2, "MKLV"), (6, None), (9, "")]
    assert list(fasta_records(numbered("no header\n"))) == []


def test_csv_rows_report_bad_lines_in_order_and_keep_going():
    huge = "x" * (csv.field_size_limit() + 1)
    lines = numbered("a,b\n", "1,2\n", None, f'"{huge}",3\n', "4,5\n", None)
    reader = CsvRows(lines)
    assert reader.fieldnames == ["a", "b"]
    rows = list(reader)
    assert rows[0] == (2, {"a": "1", "b": "2"}, None)
    assert (
        rows[1][0] == 4 and rows[1][1] is None and rows[1][2].startswith("csv row cannot be read")
    )
    assert rows[2:] == [(3, None, NOT_TEXT), (5, {"a": "4", "b": "5"}, None), (6, None, NOT_TEXT)]


def test_csv_header_errors_surface_to_the_caller():
    huge = "x" * (csv.field_size_limit() + 1)
    with pytest.raises(csv.Error):
        _ = CsvRows(numbered(f'"{huge}"\n')).fieldnames


def test_a_csv_row_is_numbered_by_its_last_line():
    rows = list(CsvRows(numbered("a,b\n", '"x\n', 'y",1\n', "2,3\n")))
    assert [(n, row) for n, row, _ in rows] == [
        (3, {"a": "x\ny", "b": "1"}),
        (4, {"a": "2", "b": "3"}),
    ]
