"""The one rule for who may read /metrics (xinbao.scrape_gate), cloud and kiosk alike."""

from ipaddress import ip_network

from xinbao.scrape_gate import ScrapeGate

TOKEN = "k" * 10 + "Q7vL2pX9sR4tW8yZ1bN5mC3dF6gH0jA"


def test_without_a_token_only_loopback_by_default():
    gate = ScrapeGate()
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        assert gate.refusal(host, None) is None, host
    for host in ("192.0.2.7", "::ffff:192.0.2.7", "fd00::2", "testclient", "", None, "[::1"):
        assert gate.refusal(host, None) == "metrics_address", host


def test_a_token_is_needed_exactly():
    gate = ScrapeGate(token=TOKEN)
    assert gate.refusal("192.0.2.7", f"Bearer {TOKEN}") is None
    assert gate.refusal("192.0.2.7", f"bearer {TOKEN}") is None
    for given in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x"):
        assert gate.refusal("127.0.0.1", given) == "metrics_token", given


def test_an_allow_list_with_a_token_needs_both():
    gate = ScrapeGate(token=TOKEN, allow=(ip_network("10.0.0.0/8"),))
    assert gate.refusal("10.1.2.3", f"Bearer {TOKEN}") is None
    assert gate.refusal("10.1.2.3", None) == "metrics_token"
    assert gate.refusal("127.0.0.1", f"Bearer {TOKEN}") == "metrics_address"
