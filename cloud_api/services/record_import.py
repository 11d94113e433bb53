"""A CSV batch of finished licences, imported by staff: each row is a record that is (now)
``approved``, ready to be loaded into a locker.

Columns (header names in English or Chinese, any order, other columns ignored):
``application_number`` (申请编号), ``applicant`` (申请人), ``mobile`` (手机号), ``matter``
(事项). UTF-8 with or without a BOM, comma-separated, quoted as spreadsheets quote, CRLF or LF.

Two kinds of failure, kept apart:
- The FILE is broken (too large, not UTF-8, not CSV, no header, a required column missing
  from the header, too many rows): refused as a whole (``ImportFileError``), before anything
  is read into the database, so nothing changes.
- A ROW is wrong (bad mobile, a missing value, the same application number twice in the file,
  details that differ from the existing record, a state the record cannot leave for
  ``approved``): that row is refused with its reason in the report and the others go on.

All rows are applied in ONE transaction with the report's outcomes; a failure of the
database part-way (or a crash) leaves nothing half-written, and since a row that is already
as the file says is ``unchanged``, importing the same file again is always safe.

A row never changes an existing record's applicant, mobile or matter: a changed mobile
redirects the applicant's codes, which is done on the record (PUT, audited, codes reissued),
not in bulk from a file.
"""

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session, SQLModel

from cloud_api.errors import CloudError, IllegalTransition, InputError
from cloud_api.models.record import ApprovalRecord, RecordCreate, RecordStatus
from cloud_api.services import audit, records
from cloud_api.services.transitions import check_record_by_integrator

MAX_BYTES = 1_000_000  # ~10,000 rows of typical length; a day's licences are far fewer
MAX_ROWS = 5_000
# A licence at or past approval: the row is already true, whatever happened since.
DONE = frozenset({RecordStatus.approved, RecordStatus.licence_in_locker, RecordStatus.collected})

COLUMNS = {
    "application_number": ("application_number", "application_no", "number", "申请编号", "申请号"),
    "applicant_name": ("applicant", "applicant_name", "name", "申请人", "申请人姓名", "姓名"),
    "mobile": ("mobile", "phone", "手机号", "手机号码", "手机", "联系电话"),
    "matter_name": ("matter", "matter_name", "事项", "事项名称", "办理事项"),
}
_ALIASES = {alias: field for field, names in COLUMNS.items() for alias in names}
_CN_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")


class ImportFileError(CloudError):
    """The file as a whole cannot be read: nothing was changed."""

    title = "Unreadable import file"
    slug = "import-file"

    def __init__(self, reason: str, zh: str, en: str, status: int = 422):
        super().__init__(en)
        self.status = status
        self.extra = {"reason": reason, "message_zh": zh, "message_en": en}


class Outcome(StrEnum):
    created = "created"
    updated = "updated"  # an existing record moved to approved
    unchanged = "unchanged"
    refused = "refused"


class RowReport(SQLModel):
    line: int  # the row's line in the file (the header is line 1)
    application_number: str | None
    outcome: Outcome
    status: str | None = None  # the record's status after the import
    reason: str | None = None  # why it was refused: a word a program can test
    message_zh: str | None = None
    message_en: str | None = None


class ImportReport(SQLModel):
    file_sha256: str
    rows: int
    created: int
    updated: int
    unchanged: int
    refused: int
    ignored_columns: list[str]
    report: list[RowReport]


@dataclass
class _Row:
    line: int
    cells: dict[str, str]  # field -> raw text; a missing cell is absent
    too_many_cells: bool = False  # more non-empty cells than the header has columns


def _decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise ImportFileError(
            "too_large",
            f"文件过大：最多 {MAX_BYTES // 1000} KB，请分批导入",
            f"the file is over {MAX_BYTES // 1000} KB: split it into smaller batches",
            status=413,
        )
    try:
        text = data.decode("utf-8-sig")  # a leading BOM (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as err:
        raise ImportFileError(
            "not_utf8",
            f"文件不是 UTF-8 编码（第 {err.start + 1} 字节）：请另存为 \u201cCSV UTF-8\u201d",
            f"the file is not UTF-8 (byte {err.start + 1}): save it as 'CSV UTF-8'",
        ) from None
    if "\x00" in text:
        raise ImportFileError(
            "not_csv", "这不是 CSV 文本文件", "this is not a CSV text file (it contains NUL bytes)"
        )
    return text


def _header_key(cell: str) -> str:
    return re.sub(r"[\s_-]+", "_", cell.strip().lower())


def parse(data: bytes) -> tuple[list[_Row], list[str]]:
    """The rows (blank lines skipped) and the header names ignored; ``ImportFileError`` for a
    file that cannot be read as a whole."""
    reader = csv.reader(io.StringIO(_decode(data), newline=""), strict=True)
    header: dict[int, str] | None = None
    width = 0  # cells in the header row
    ignored: list[str] = []
    rows: list[_Row] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header, ignored = _read_header(cells, reader.line_num)
                width = len(cells)
                continue
            if len(rows) >= MAX_ROWS:
                raise ImportFileError(
                    "too_many_rows",
                    f"行数过多：每次最多 {MAX_ROWS} 行",
                    f"more than {MAX_ROWS} rows: split the file",
                )
            row = _Row(reader.line_num, {f: cells[i] for i, f in header.items() if i < len(cells)})
            if any(c.strip() for c in cells[width:]):
                row.too_many_cells = True
            rows.append(row)
    except csv.Error as err:
        raise ImportFileError(
            "not_csv",
            f"第 {reader.line_num} 行不是有效的 CSV（{err}）",
            f"line {reader.line_num} is not valid CSV ({err})",
        ) from None
    if header is None:
        raise ImportFileError(
            "no_header",
            "文件为空或没有标题行",
            "the file is empty: the first line must name the columns",
        )
    return rows, ignored


def _read_header(cells: list[str], line: int) -> tuple[dict[int, str], list[str]]:
    header: dict[int, str] = {}
    ignored: list[str] = []
    for i, cell in enumerate(cells):
        field = _ALIASES.get(_header_key(cell))
        if field is None:
            if cell.strip():
                ignored.append(cell.strip()[:64])
        elif field in header.values():
            raise ImportFileError(
                "duplicate_column",
                f"标题行中 {cell.strip()!r} 列重复",
                f"the header names the column {cell.strip()!r} twice",
            )
        else:
            header[i] = field
    missing = [COLUMNS[f][0] for f in COLUMNS if f not in header.values()]
    if missing:
        raise ImportFileError(
            "no_header",
            f"第 {line} 行不是有效的标题行：缺少 {', '.join(missing)} 列"
            "（需要 申请编号, 申请人, 手机号, 事项）",
            f"line {line} is not a valid header: missing {', '.join(missing)} "
            "(the columns are application_number, applicant, mobile, matter)",
        )
    return header, ignored


def _mobile_text(raw: str) -> str:
    """A spreadsheet drops the '+' and the country code: a bare Chinese mobile is +86."""
    bare = re.sub(r"[\s-]", "", raw)
    return f"+86{bare}" if _CN_MOBILE.match(bare) else raw


_REASONS = {
    "bad_mobile": ("手机号无效", "the mobile number is not valid"),
    "missing_column": ("缺少必填项", "a required value is missing"),
    "too_many_cells": ("本行的列数多于标题行", "the row has more cells than the header"),
    "invalid_value": ("内容无效", "a value is not valid"),
    "duplicate_in_file": (
        "同一申请编号在文件中重复",
        "the application number is in the file twice",
    ),
    "details_differ": (
        "与已有审批件的信息不一致（请在审批件页面修改）",
        "the details differ from the existing record (change them on the record)",
    ),
    "illegal_state_change": (
        "当前状态不能变为已批准",
        "the record cannot become approved from its state",
    ),
}


def _refused(row: _Row, number: str | None, reason: str, detail: str = "") -> RowReport:
    zh, en = _REASONS[reason]
    return RowReport(
        line=row.line,
        application_number=number,
        outcome=Outcome.refused,
        reason=reason,
        message_zh=f"{zh}{'：' + detail if detail else ''}",
        message_en=f"{en}{': ' + detail if detail else ''}",
    )


def _validate(row: _Row) -> RecordCreate | RowReport:
    number = (row.cells.get("application_number") or "").strip()[:64] or None
    if row.too_many_cells:
        return _refused(row, number, "too_many_cells")
    for field, names in COLUMNS.items():
        if not (row.cells.get(field) or "").strip():
            return _refused(row, number, "missing_column", names[0])
    try:
        body = RecordCreate(
            application_number=row.cells["application_number"],
            applicant_name=row.cells["applicant_name"],
            mobile=_mobile_text(row.cells["mobile"]),
            matter_name=row.cells["matter_name"],
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        why = str(first["msg"]).removeprefix("Value error, ")
        if field == "mobile":
            return _refused(row, number, "bad_mobile", why[:200])
        name = COLUMNS.get(field, (field,))[0]
        return _refused(row, number, "invalid_value", f"{name}: {why}"[:200])
    try:
        # E.164 as stored, so a row and the record it repeats compare equal.
        return body.model_copy(update={"mobile": records.normalised_mobile(body.mobile)})
    except InputError as err:
        return _refused(row, number, "bad_mobile", str(err)[:200])


def _with_duplicates_refused(
    rows: list[_Row], checked: list[RecordCreate | RowReport]
) -> list[RecordCreate | RowReport]:
    """The same application number twice: later identical copies are refused (the first
    stands); copies that disagree are all refused, since the file does not say which is right."""
    first: dict[str, int] = {}
    disagree: set[str] = set()
    for i, item in enumerate(checked):
        if isinstance(item, RecordCreate):
            j = first.setdefault(item.application_number, i)
            if j != i and checked[j] != item:
                disagree.add(item.application_number)
    out: list[RecordCreate | RowReport] = []
    for i, item in enumerate(checked):
        if isinstance(item, RecordCreate):
            number = item.application_number
            j = first[number]
            if number in disagree:
                others = [rows[k].line for k, c in enumerate(checked) if k != i and _is(c, number)]
                lines = ", ".join(str(n) for n in others)
                item = _refused(rows[i], number, "duplicate_in_file", f"≠ line {lines}")
            elif j != i:
                item = _refused(rows[i], number, "duplicate_in_file", f"= line {rows[j].line}")
        out.append(item)
    return out


def _is(item: RecordCreate | RowReport, number: str) -> bool:
    return isinstance(item, RecordCreate) and item.application_number == number


def _apply_row(
    session: Session, row: _Row, body: RecordCreate, actor: str, now: datetime, batch: str
) -> RowReport:
    number, mobile = body.application_number, body.mobile
    existing = session.scalar(
        select(ApprovalRecord).where(ApprovalRecord.application_number == number).with_for_update()
    )
    if existing is None:
        record = records.add_approved(session, body, mobile, actor, {"via": "csv", "batch": batch})
        return RowReport(
            line=row.line, application_number=number, outcome=Outcome.created, status=record.status
        )
    theirs = (existing.applicant_name, existing.mobile, existing.matter_name)
    if theirs != (body.applicant_name, mobile, body.matter_name):
        fields = [
            name
            for name, a, b in zip(
                ("applicant", "mobile", "matter"),
                theirs,
                (body.applicant_name, mobile, body.matter_name),
                strict=True,
            )
            if a != b
        ]
        return _refused(row, number, "details_differ", ", ".join(fields))
    if RecordStatus(existing.status) in DONE:
        return RowReport(
            line=row.line,
            application_number=number,
            outcome=Outcome.unchanged,
            status=existing.status,
        )
    try:
        check_record_by_integrator(existing.status, RecordStatus.approved)
    except IllegalTransition:
        return _refused(row, number, "illegal_state_change", f"{existing.status} → approved")
    records.move(
        session,
        existing,
        RecordStatus.approved,
        actor,
        now,
        by_integrator=True,
        reason=f"CSV import {batch}",
    )
    return RowReport(
        line=row.line, application_number=number, outcome=Outcome.updated, status=existing.status
    )


def import_csv(session: Session, data: bytes, actor: str, now: datetime) -> ImportReport:
    """Read the whole file (``ImportFileError``: nothing changed), then apply every good row
    and commit once, with one ``records.imported`` audit entry for the batch."""
    rows, ignored = parse(data)
    digest = hashlib.sha256(data).hexdigest()
    batch = digest[:12]
    checked = _with_duplicates_refused(rows, [_validate(r) for r in rows])
    report = [
        item
        if isinstance(item, RowReport)
        else _apply_row(session, rows[i], item, actor, now, batch)
        for i, item in enumerate(checked)
    ]
    counts = {o.value: sum(1 for r in report if r.outcome == o) for o in Outcome}
    audit.append(
        session,
        actor,
        "records.imported",
        f"import:{batch}",
        {"file_sha256": digest, "rows": len(report), **counts},
    )
    session.commit()
    return ImportReport(
        file_sha256=digest, rows=len(report), ignored_columns=ignored, report=report, **counts
    )
