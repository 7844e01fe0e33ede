"""The outbox a tracker sends through (issue 20, part 3), against a fake store that goes down and up."""

from __future__ import annotations

import pytest

from molwm.outbox import Outbox, StoreUnreachable, read_outbox

pytestmark = pytest.mark.unit


class FakeStore:
    def __init__(self):
        self.up, self.got, self.tries = True, [], 0

    def send(self, kind, payload):
        self.tries += 1
        if not self.up:
            raise StoreUnreachable("connection refused")
        if payload.get("bad"):
            raise ValueError("the store refused this value")  # a refusal is the caller's, not an outage
        self.got.append((kind, payload))


def test_calls_are_kept_in_order_while_down_and_sent_first_when_up(tmp_path):
    store = FakeStore()
    box = Outbox(store.send, tmp_path, retry_seconds=0.0)
    box.call("metrics", {"metrics": {"loss": 1.0}, "step": 0})
    store.up = False
    art = tmp_path / "plot.png"
    art.write_bytes(b"png")
    box.call("metrics", {"metrics": {"loss": 0.5, "acc": 0.1}, "step": 1})
    box.call("artifact", {"path": str(art)}, artifact=art)
    art.unlink()  # a temporary file: the outbox kept a copy under the same name
    assert [k for k, _ in read_outbox(box.file)] == ["metrics", "artifact"]
    assert read_outbox(box.file)[1][1]["path"].endswith("/plot.png")
    line = box.report("http://store")
    assert "unreachable 1 time(s)" in line and "NOT logged: 1 artifacts, 2 metric values" in line
    store.up = True
    box.call("end", {"status": "FINISHED"})
    assert [(k, p.get("step")) for k, p in store.got] == [("metrics", 0), ("metrics", 1), ("artifact", None),
                                                          ("end", None)]
    assert not box.file.exists() and "NOT logged" not in box.report("http://store")
    assert "of which 1 artifacts, 2 metric values sent late" in box.report("http://store")
    with pytest.raises(ValueError, match="refused"):
        box.call("params", {"params": {"a": 1}, "bad": True})


def test_a_down_store_is_tried_less_and_less_often(tmp_path):
    store = FakeStore()
    store.up = False
    box = Outbox(store.send, tmp_path, retry_seconds=3600.0)
    for step in range(50):
        box.call("metrics", {"metrics": {"loss": 1.0}, "step": step})
    assert store.tries == 1 and len(box.kept) == 50  # one try, then no waiting on the network
    box._last_try -= 3600.0  # an hour later
    box.call("metrics", {"metrics": {"loss": 1.0}, "step": 50})
    assert store.tries == 2 and box._wait == 60.0  # doubled, capped
    assert box.outages == 1 and len(box.kept) == 51


def test_nothing_is_reported_when_the_store_never_failed(tmp_path):
    box = Outbox(FakeStore().send, tmp_path)
    box.call("params", {"params": {"a": 1, "b": 2}})
    assert box.report("s") is None and box.sent["params"] == 2 and not box.file.exists()


def test_what_a_call_returns_comes_back_now_or_is_reported_when_it_was_sent_late(tmp_path):
    store = FakeStore()

    def send(kind, payload):
        store.send(kind, payload)
        return f"models:/m-{payload['name']}" if kind == "model" else None

    box = Outbox(send, tmp_path, retry_seconds=0.0)
    assert box.call("model", {"name": "a"}) == "models:/m-a"
    store.up = False
    assert box.call("model", {"name": "b"}) is None  # kept
    store.up = True
    box.call("end", {"status": "FINISHED"})
    assert box.late == ["models:/m-b"] and "1 models sent late" in box.report("s")
    assert "models logged late: models:/m-b" in box.report("s")
