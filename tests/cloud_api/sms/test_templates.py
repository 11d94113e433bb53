import pytest

from cloud_api.sms.errors import SmsInputError
from cloud_api.sms.templates import TEMPLATES, check_params, get_template, render, segments

PARAMS = {
    "locker_name": "国际港务区政务服务中心A柜",
    "expires_at": "2025-03-05T10:00:00+00:00",
    "service_phone": "029-86868686",
    "rating_url": "https://zwfw.example.gov.cn/rate/7Hk2Qz",
    "application_number": "XA-2025-SPJY-00012345",
    "compartment": "12",
    "deposited_at": "2025-03-05T10:00:00+00:00",
}


def _params(name: str) -> dict:
    return {k: PARAMS[k] for k in get_template(name).params}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_is_chinese_first_then_english_and_short(name):
    body = render(name, _params(name), "40417365")
    assert body.startswith("【信包箱】")
    first_latin = next(i for i, ch in enumerate(body) if ch.isascii() and ch.isalpha())
    assert any("\u4e00" <= ch <= "\u9fff" for ch in body[:first_latin])
    assert segments(body) <= 3
    assert "{" not in body and "}" not in body


@pytest.mark.parametrize(
    "name", ["dropoff_code", "pickup_code", "reminder", "dropoff_code_new", "pickup_code_new"]
)
def test_code_templates_show_code_twice_and_times_in_china_time(name):
    body = render(name, _params(name), "40417365")
    assert body.count("40417365") == 2
    # 10:00 UTC is 18:00 in China, shown once in each language.
    assert "3月5日 18:00" in body and "5 Mar 18:00" in body


def test_receipt_carries_rating_link():
    body = render("receipt", _params("receipt"), None)
    assert "满意度评价" in body and PARAMS["rating_url"] in body


def test_missing_param_is_named():
    with pytest.raises(SmsInputError, match="needs params: expires_at"):
        render("pickup_code", {"locker_name": "A"}, "12345678")


def test_unknown_param_and_code_param_refused():
    with pytest.raises(SmsInputError, match="has no params: colour"):
        check_params(get_template("receipt"), {**_params("receipt"), "colour": "red"})
    with pytest.raises(SmsInputError, match="must not contain the code"):
        check_params(get_template("pickup_code"), {**_params("pickup_code"), "code": "1"})


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("expires_at", "tomorrow", "ISO-8601"),
        ("expires_at", "2025-03-05T10:00:00", "UTC offset"),
        ("locker_name", "", "empty"),
        ("locker_name", "A\nB", "control"),
        ("locker_name", "x" * 31, "at most 30"),
        ("locker_name", ["A"], "text"),
    ],
)
def test_bad_param_values(name, value, message):
    with pytest.raises(SmsInputError, match=message):
        check_params(get_template("pickup_code"), {**_params("pickup_code"), name: value})


def test_bad_rating_url_and_phone():
    with pytest.raises(SmsInputError, match="URL"):
        check_params(get_template("receipt"), {"rating_url": "javascript:alert(1)"})
    with pytest.raises(SmsInputError, match="telephone"):
        check_params(get_template("overdue"), {"locker_name": "A", "service_phone": "call us"})


def test_code_template_without_code_and_unknown_template():
    with pytest.raises(SmsInputError, match="needs a code"):
        render("dropoff_code", _params("dropoff_code"), None)
    with pytest.raises(SmsInputError, match="unknown SMS template 'hello'"):
        render("hello", {}, None)


def test_segments_counts_gsm_and_ucs2():
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2
    assert segments("中" * 70) == 1
    assert segments("中" * 71) == 2
    assert segments("中" * 135) == 3


def test_dropoff_receipt_names_the_record_the_compartment_and_the_time():
    body = render("dropoff_receipt", _params("dropoff_receipt"), None)
    assert body.count("XA-2025-SPJY-00012345") == 2 and "12号箱" in body and "box 12" in body
    assert "3月5日 18:00" in body and "5 Mar 18:00" in body
