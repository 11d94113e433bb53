"""The CSV import of finished licences (issue 13), over HTTP on SQLite and PostgreSQL: the
per-row report, the edge cases of real spreadsheets (BOM, CRLF, quoted commas, Chinese
headers and names, bare 11-digit mobiles), re-import idempotence, and broken files that
must change nothing."""

import pytest
from sqlmodel import Session, select

from cloud_api.models.audit import AuditEntry
from cloud_api.models.record import ApprovalRecord
from cloud_api.services import record_import
from tests.cloud_api.conftest import make_record, reserve_dropoff
from tests.cloud_api.helpers import assert_problem
from tests.cloud_api.test_staff_records import counts, to_status

HEADER = "application_number,applicant,mobile,matter\r\n"
EXAMPLE = "examples/records_import.csv"


def post_csv(world, data: bytes | str, headers: dict | None = None):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return world.client.post(
        "/api/v1/staff/records/import",
        content=data,
        headers=(headers or world.admin_headers) | {"Content-Type": "text/csv"},
    )


def report(world, data) -> dict:
    r = post_csv(world, data)
    assert r.status_code == 200, r.text
    return r.json()


def outcomes(body: dict) -> list[tuple]:
    return [(r["line"], r["application_number"], r["outcome"], r["reason"]) for r in body["report"]]


def record(engine, number: str) -> ApprovalRecord | None:
    with Session(engine) as s:
        return s.exec(
            select(ApprovalRecord).where(ApprovalRecord.application_number == number)
        ).first()


def test_a_spreadsheet_export_with_bom_crlf_quotes_and_chinese(world, engine):
    data = (
        "\ufeff申请编号,申请人,手机号,事项,备注\r\n"
        'XA-I-1,王小明,13800138000,"食品经营许可证, 延续",窗口\r\n'
        'XA-I-2,"欧阳, 娜娜",+86 139-0013-9000,"药品""零售""许可",\r\n'
        "\r\n"
        "XA-I-3,Zhang Wei,+8613700137000,营业执照\r\n"
    ).encode("utf-8")
    body = report(world, data)
    assert outcomes(body) == [
        (2, "XA-I-1", "created", None),
        (3, "XA-I-2", "created", None),
        (5, "XA-I-3", "created", None),
    ]
    assert (body["created"], body["rows"], body["ignored_columns"]) == (3, 3, ["备注"])
    first, second = record(engine, "XA-I-1"), record(engine, "XA-I-2")
    assert (first.status, first.mobile, first.matter_name) == (
        "approved",
        "+8613800138000",
        "食品经营许可证, 延续",
    )
    assert (second.applicant_name, second.mobile, second.matter_name) == (
        "欧阳, 娜娜",
        "+8613900139000",
        '药品"零售"许可',
    )
    with Session(engine) as s:
        created = s.exec(select(AuditEntry).where(AuditEntry.subject == "record:XA-I-1")).one()
        batch = s.exec(select(AuditEntry).where(AuditEntry.action == "records.imported")).one()
    assert created.actor == "staff:admin" and created.detail["via"] == "csv"
    assert created.detail["status"] == "approved"
    assert batch.actor == "staff:admin"
    assert (batch.detail["created"], batch.detail["file_sha256"]) == (3, body["file_sha256"])


def test_the_same_file_twice_is_unchanged_the_second_time(world, engine):
    with open(EXAMPLE, "rb") as f:
        data = f.read()
    first = report(world, data)
    assert first["refused"] == 0 and first["created"] == first["rows"] >= 5
    entries = counts(engine)[1]
    second = report(world, data)
    assert [r["outcome"] for r in second["report"]] == ["unchanged"] * first["rows"]
    assert counts(engine)[1] == entries + 1  # only the batch's own entry
    # Also once a licence has gone on (loaded, collected): still unchanged, not refused.
    number = first["report"][0]["application_number"]
    r = world.client.post(
        f"/api/v1/staff/records/{number}/transitions",
        json={"status": "collected"},
        headers=world.admin_headers,
    )
    assert r.status_code == 200, r.text
    assert report(world, data)["unchanged"] == first["rows"]


def test_each_bad_row_is_refused_with_its_reason_and_the_rest_applied(world, engine):
    c, h = world.client, world.integrator_headers
    make_record(c, h, number="XA-R-5", status="submitted")  # cannot jump to approved
    make_record(c, h, number="XA-R-6")
    to_status(world, "XA-R-6", "documents_received")  # can: updated
    make_record(c, h, number="XA-R-7")  # different applicant in the file
    make_record(c, h, number="XA-R-8")
    to_status(world, "XA-R-8", "rejected")
    data = HEADER + (
        "XA-R-1,李华,12345,营业执照\r\n"  # 2 bad mobile
        "XA-R-2,李华,,营业执照\r\n"  # 3 missing mobile
        "XA-R-3,李华\r\n"  # 4 missing columns at the end
        "XA-R-4,李华,13800138000,营业执照\r\n"  # 5 first copy: created
        "XA-R-4,李华,13800138000,营业执照\r\n"  # 6 identical copy: refused
        "XA-R-5,王小明,13800138000,食品经营许可证\r\n"  # 7 submitted -> approved: illegal
        "XA-R-6,王小明,13800138000,食品经营许可证\r\n"  # 8 updated
        "XA-R-7,王大明,13800138000,食品经营许可证\r\n"  # 9 details differ
        "XA-R-8,王小明,13800138000,食品经营许可证\r\n"  # 10 rejected -> approved: illegal
        "XA-R-9,甲,13800138000,证\r\n"  # 11 and 12 disagree: both refused
        "XA-R-9,乙,13800138000,证\r\n"
        "bad number!,李华,13800138000,营业执照\r\n"  # 13 invalid application number
        "XA-R-10,李华,13800138000,营业执照,多余\r\n"  # 14 more cells than the header
    )
    body = report(world, data)
    assert outcomes(body) == [
        (2, "XA-R-1", "refused", "bad_mobile"),
        (3, "XA-R-2", "refused", "missing_column"),
        (4, "XA-R-3", "refused", "missing_column"),
        (5, "XA-R-4", "created", None),
        (6, "XA-R-4", "refused", "duplicate_in_file"),
        (7, "XA-R-5", "refused", "illegal_state_change"),
        (8, "XA-R-6", "updated", None),
        (9, "XA-R-7", "refused", "details_differ"),
        (10, "XA-R-8", "refused", "illegal_state_change"),
        (11, "XA-R-9", "refused", "duplicate_in_file"),
        (12, "XA-R-9", "refused", "duplicate_in_file"),
        (13, "bad number!", "refused", "invalid_value"),
        (14, "XA-R-10", "refused", "too_many_cells"),
    ]
    for row in body["report"]:
        if row["outcome"] == "refused":
            assert row["message_zh"] and row["message_en"], row
    assert "mobile" in body["report"][2]["message_en"]
    assert "submitted" in body["report"][5]["message_en"]
    assert "applicant" in body["report"][7]["message_en"]
    assert (body["created"], body["updated"], body["refused"]) == (1, 1, 11)
    assert record(engine, "XA-R-5").status == "submitted"
    assert record(engine, "XA-R-6").status == "approved"
    assert record(engine, "XA-R-7").applicant_name == "王小明"  # never changed by a file
    assert record(engine, "XA-R-9") is None and record(engine, "XA-R-1") is None
    with Session(engine) as s:
        moved = s.exec(select(AuditEntry).where(AuditEntry.subject == "record:XA-R-6")).all()
    assert moved[-1].actor == "staff:admin" and moved[-1].detail["to"] == "approved"

    # Again: what was applied is unchanged, what was refused is refused again.
    again = report(world, data)
    assert [r["outcome"] for r in again["report"]].count("unchanged") == 2
    assert again["refused"] == 11 and again["created"] == again["updated"] == 0


def test_a_record_with_an_active_dropoff_can_still_be_approved_only_by_the_rules(world, engine):
    """A reserved drop-off's record is prereview_passed: approved is not a legal next state,
    so the file cannot skip the papers (the same rule as the API)."""
    reserve_dropoff(world, number="XA-D-1")
    body = report(world, HEADER + "XA-D-1,王小明,13800138000,食品经营许可证\r\n")
    assert outcomes(body) == [(2, "XA-D-1", "refused", "illegal_state_change")]


GBK = ("申请编号,申请人,手机号,事项\nXA-G-1,王小明,13800138000,营业执照\n").encode("gbk")


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (GBK, 422, "not_utf8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422, "not_utf8"),
        (HEADER.encode() + b"XA-N-1,\x00,1,2\r\n", 422, "not_csv"),
        (b"", 422, "no_header"),
        (b"\xef\xbb\xbf\r\n\r\n", 422, "no_header"),
        (b'{"application_number": "XA-N-1"}', 422, "no_header"),
        (b"application_number,applicant,matter\nXA-N-1,x,y\n", 422, "no_header"),
        (b"mobile,applicant,mobile,matter,application_number\n", 422, "duplicate_column"),
        # A quote left open: the rest of the file would be one cell.
        (
            HEADER.encode() + b'XA-N-1,"open,13800138000,x\r\nXA-N-2,b,13800138000,y\r\n',
            422,
            "not_csv",
        ),
        (HEADER.encode() + b'XA-N-1,"ab"c,13800138000,x\r\n', 422, "not_csv"),
    ],
    ids=[
        "gbk",
        "png",
        "nul",
        "empty",
        "blank-lines",
        "json",
        "header-missing-mobile",
        "header-repeats",
        "open-quote",
        "stray-quote",
    ],
)
def test_a_broken_file_is_refused_whole_and_changes_nothing(world, engine, data, status, reason):
    # A good first row in front, where the file has rows: it must not be written either.
    before = counts(engine)
    body = assert_problem(post_csv(world, data), status)
    assert body["reason"] == reason, body
    assert body["message_zh"] and body["message_en"]
    assert counts(engine) == before


def test_a_file_over_the_size_limit_or_the_row_limit_changes_nothing(world, engine, monkeypatch):
    before = counts(engine)
    row = "XA-B-{n},王小明,13800138000,营业执照\r\n"
    big = HEADER + "".join(row.format(n=n) for n in range(30_000))
    assert len(big.encode()) > record_import.MAX_BYTES
    body = assert_problem(post_csv(world, big), 413)
    assert body["reason"] == "too_large"
    monkeypatch.setattr(record_import, "MAX_ROWS", 3)
    four = HEADER + "".join(row.format(n=n) for n in range(4))
    assert assert_problem(post_csv(world, four), 422)["reason"] == "too_many_rows"
    assert counts(engine) == before
    three = HEADER + "".join(row.format(n=n) for n in range(3))
    assert report(world, three)["created"] == 3


def test_a_failure_part_way_leaves_nothing_half_written(world, engine, monkeypatch):
    """The database fails at the fourth row (a concurrent import of the same number, say):
    the three rows before it are not kept, and the whole file can be imported again."""
    from cloud_api.services import records

    real = records.add_approved
    calls = []

    def failing(session, body, *args, **kwargs):
        calls.append(body.application_number)
        if len(calls) == 4:
            from sqlalchemy.exc import IntegrityError

            raise IntegrityError("INSERT", {}, Exception("duplicate key (simulated)"))
        return real(session, body, *args, **kwargs)

    monkeypatch.setattr(records, "add_approved", failing)
    with open(EXAMPLE, "rb") as f:
        data = f.read()
    before = counts(engine)
    assert_problem(post_csv(world, data), 409)
    assert counts(engine) == before
    monkeypatch.setattr(records, "add_approved", real)
    assert report(world, data)["refused"] == 0
