"""Error answers: JSON under /api/, the ordinary HTML page elsewhere."""
def test_non_api_404_stays_html(client):
    r = client.get("/no-such-page")
    assert r.status_code == 404 and r.mimetype == "text/html"
    r = client.get("/api/v1/no-such")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
