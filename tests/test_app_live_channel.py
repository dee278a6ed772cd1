"""The live view's direct channel (relviz/viz/live_cloud/channel.py, issue #31 item 1): a keystroke posted
to it is answered with the colours and legend the page's Streamlit path gives for the same text (checked
against a second session that took the text through Streamlit), the page's next run takes up its text and
view, an older Streamlit message does not undo it, and only a session's own token reaches it."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from test_app import _page
from test_zeroshot_page import _live

TEXT = "road = driveable surface\nbuilding = manmade\nparked car"


def _post(port: int, path: str, body: bytes) -> tuple[dict, bytes]:
    from relviz.viz.live_cloud.channel import decode

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return decode(response.read())


def test_a_keystroke_through_the_channel_is_answered_as_the_page_would_and_the_page_takes_it_up(app_workspace):
    from relviz.viz.live_cloud import channel

    at = _page("app_pages/zeroshot.py")
    assert not at.exception, at.exception
    args, _ = _live(at)
    port, path = args["channel"]["port"], args["channel"]["path"]
    assert path == f"/live/{at.session_state['zs_channel_token']}" and port == channel._server.server_address[1]

    message = {"seq": 10, "text": TEXT, "cursor": 2, "focus": None, "commit": False, "key": 1.0, "sent": 2.0}
    meta, colors = _post(port, path, json.dumps(message).encode())
    assert meta["reply"]["seq"] == 10 and meta["reply"]["error"] is None and meta["reply"]["end"] >= meta["reply"]["start"]

    reference = _page("app_pages/zeroshot.py")  # another session: the same text through Streamlit
    reference.session_state["zs_queries"] = TEXT
    reference.run()
    ref_args, ref_colors = _live(reference)
    assert np.array_equal(np.frombuffer(colors, np.uint8), ref_colors)
    assert meta["table"] == ref_args["table"] and meta["legend"] == ref_args["legend"]
    assert meta["note"] == ref_args["note"]

    at.run()  # the page's next run (Ctrl+Enter, a control) shows what the channel answered
    assert at.session_state["zs_queries"] == TEXT
    assert [m.value for m in at.metric] == [m.value for m in reference.metric]
    args, now = _live(at)
    assert np.array_equal(now, ref_colors) and args["legend"] == ref_args["legend"]

    # a message sent through Streamlit before the keystroke the channel answered brings no old text back
    at.session_state["zs_live"] = {"seq": 9, "text": "car", "cursor": 0, "focus": None, "commit": False,
                                   "key": 0.5, "sent": 0.6}
    at.run()
    assert at.session_state["zs_queries"] == TEXT

    # a query the parser refuses: said in the reply, the last good colours kept
    bad = {**message, "seq": 11, "text": "x = no such class"}
    meta, colors = _post(port, path, json.dumps(bad).encode())
    assert "no such class" in meta["reply"]["error"] and np.array_equal(np.frombuffer(colors, np.uint8), ref_colors)


def test_the_channel_refuses_what_no_session_sent(app_workspace):
    at = _page("app_pages/zeroshot.py")
    args, _ = _live(at)
    token = at.session_state["zs_channel_token"]
    for path, body, status in [("/live/not-a-session", b"{}", 404), ("/other", b"{}", 404),
                               (f"/live/{token}", b"not json", 400), (f"/live/{token}", b"[1]", 400)]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(args["channel"]["port"], path, body)
        assert refused.value.code == status, path


def test_an_idle_connection_holds_up_no_one_and_bad_lengths_are_refused():
    """A client that connects and sends nothing (or less than it announced) does not delay another
    session's answer: each connection has its own thread and is closed after the handler's timeout."""
    import socket
    import time

    from relviz.viz.live_cloud import channel

    token = channel.new_token()
    where = channel.register(token, lambda message: ({"echo": message["x"]}, bytes([1, 2, 3])))
    port = where["port"]
    idle = socket.create_connection(("127.0.0.1", port))  # connected, silent
    short = socket.create_connection(("127.0.0.1", port))
    short.sendall(f"POST {where['path']} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())  # 1 of 100
    try:
        start = time.monotonic()
        meta, colors = _post(port, where["path"], json.dumps({"x": 7}).encode())
        assert meta == {"echo": 7} and colors == bytes([1, 2, 3])
        assert time.monotonic() - start < channel._Handler.timeout  # not behind either of them
    finally:
        idle.close()
        short.close()
    for length in ("\u00b2", "-5", "abc"):  # '²'.isdigit() is True; none is a length
        request = urllib.request.Request(f"http://127.0.0.1:{port}{where['path']}", data=b"{}", method="POST")
        request.add_unredirected_header("Content-Length", length.encode("latin-1").decode("latin-1"))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400, length
