"""`gis-service db init|migrate|load|status|rules` and keys on the database: a fresh database gets every
migration once; load copies layers with their counts; rule overrides and keys stored through the CLI are what
a server on that database uses."""

import os
import subprocess
import sys

import httpx
import psycopg

from gis_service.config import REPO_ROOT
from gis_service.store import GeoPackageStore
from gis_service.store.pgschema import LATEST
from tests.conftest import fresh_database, live_server


def cli(*args, url, var_dir=None, check=True):
    env = dict(os.environ, GIS_DATABASE_URL=url)
    if var_dir is not None:
        env["GIS_VAR_DIR"] = str(var_dir)
    done = subprocess.run([sys.executable, "-m", "gis_service.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_init_migrate_load_and_status_on_an_empty_database(pg_url, catalog):
    base = pg_url.rsplit("/", 1)[0]
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cli_empty")
        conn.execute("CREATE DATABASE cli_empty")
    url = base + "/cli_empty"
    assert str(list(range(1, LATEST + 1))) in cli("db", "init", url=url).stdout
    assert "up to date" in cli("db", "migrate", url=url).stdout  # applied once only
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM gis.schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST + 1))
    out = cli("db", "load", "--layer", "counties", "--layer", "villages", url=url).stdout
    assert "2 个图层" in out
    status = cli("db", "status", url=url).stdout
    store = GeoPackageStore()
    for layer_id in ("counties", "villages"):
        line = next(line for line in status.splitlines() if line.split()[:1] == [layer_id])
        assert int(line.split()[-1]) == store.count(catalog.get(layer_id))
    with psycopg.connect(url) as conn:  # a GiST index on every loaded geometry
        indexes = {r[0]: r[1] for r in conn.execute("SELECT tablename, indexdef FROM pg_indexes "
                                                    "WHERE schemaname = 'layers' AND indexdef LIKE '%gist%'")}
    assert set(indexes) == {"counties", "villages"} and all("(geom)" in d for d in indexes.values())
    assert cli("db", "load", "--layer", "nosuch", url=url, check=False).returncode != 0


def test_rules_and_keys_stored_through_the_cli_are_what_every_instance_uses(pg_loaded, tmp_path):
    url = fresh_database(pg_loaded, "cli_rules")
    editor = tmp_path / "editor"
    editor.mkdir()
    (editor / "rules.local.toml").write_text("[flood]\nstatus_refresh_s = 45\n", encoding="utf-8")
    cli("db", "rules", url=url, var_dir=editor)
    key = cli("keys", "add", "--role", "planner", "--name", "cli-planner", url=url, var_dir=editor).stdout.split()[-1]
    # a server elsewhere: its own var directory has no rules.local.toml and no key file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with live_server(elsewhere, database_url=url) as (_, server):
        rules = httpx.get(server + "/api/rules", headers={"X-API-Key": key}, timeout=30)
        assert rules.status_code == 200
        refresh = next(r for r in rules.json()["rules"] if r["id"] == "status_refresh_s" and r["domain"] == "flood")
        assert refresh["value"] == 45 and refresh["overridden"] is True
        assert "gis.rules_override" in rules.json()["override_location"]  # not a file of this instance
        page = httpx.get(server + "/maps/rules", timeout=30).text
        assert "gis.rules_override" in page and "rules.local.toml</code>" not in page
    assert not (elsewhere / "keys.sqlite").exists() and not (elsewhere / "rules.local.toml").exists()
    (editor / "rules.local.toml").unlink()
    cli("db", "rules", url=url, var_dir=editor)  # no local file: the database's overrides are removed
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM gis.rules_override").fetchone()[0] == 0
