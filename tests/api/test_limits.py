"""Request bodies over the limit are a 413 JSON answer before anything parses them, with or without a
Content-Length (a chunked upload is counted as it arrives)."""

import httpx

from gis_service.api.app import MAX_BODY_BYTES

GEOMETRY = b'{"geometry": {"type": "MultiPoint", "coordinates": ['
POINTS = b",".join([b"[116.7,39.5]"] * (MAX_BODY_BYTES // 12 + 10)) + b"]}}"


def test_a_body_over_the_limit_is_a_413(server):
    body = GEOMETRY + POINTS
    assert len(body) > MAX_BODY_BYTES
    whole = httpx.post(f"{server.url}/api/canal/check", content=body,
                       headers={"content-type": "application/json"}, timeout=60)

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    streamed = httpx.post(f"{server.url}/api/canal/check", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=60)
    for r in (whole, streamed):
        assert r.status_code == 413 and set(r.json()) == {"code", "message"} and "请求体过大" in r.json()["message"]
    small = httpx.post(f"{server.url}/api/canal/check", json={"geometry": {"type": "Point", "coordinates": [116.7, 39.5]}})
    assert small.status_code == 200
