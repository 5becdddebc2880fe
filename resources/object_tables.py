"""The lineage's tables as Parquet objects in object storage (``s3://bucket/prefix``), read by DuckDB on any host.

Why Parquet in the bucket rather than Postgres: the bucket is already there for checkpoints, so there is no
database server to run, secure and back up; every written version is an immutable object, so a reader never
sees a half-written table; and DuckDB reads Parquet natively with the same SQL the local store runs.

Layout under the URL: ``versions/<table>/<version>.parquet`` (immutable, never rewritten) and a small JSON pointer
per table, ``current/<table>.json``, naming its current object with the object's size, row count, columns and,
when ``publish`` wrote it, the asset version it holds. A table written in slices (``replace_rows``: one per eval
variant, per dataset, per asset) has one pointer per slice, ``current/<table>/<column>=<value>.json``, and reads
as the union of its slices. A write uploads the object first and rewrites the pointer last (one PUT, atomic), as
``object_checkpoints.py`` does: a writer killed in between leaves an unreferenced object and the previous version
readable. Two hosts writing the same table (or slice) at once both upload; the last pointer written wins, and
readers see one complete version or the other, never a mix. Different tables and different slices never
contend. A ``publish`` of several tables flips their pointers one after another, so a reader of two of them may
see one old and one new; ``published_rows`` takes the rows and their asset version from one pointer.

Reads download the objects they need into ``cache_dir`` (keyed by version, so a cached copy never goes stale)
and query them in an in-memory DuckDB connection with a view per table the SQL names. Measured against the
S3 server of the tests, a view over ``s3://`` through ``register_filesystem`` fetched the object again for
every query (~170 ms for 100k rows, vs ~5 ms once downloaded) and the httpfs extension would be a download at
run time, so this module downloads. Old versions stay in the bucket; expire ``versions/`` with a lifecycle rule.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from resources.duckdb_store import (_MISSING_TABLE, TABLE_VERSIONS, DuckDBStore, MissingDatabase, MissingTable,
                                    writer_of)
from resources.object_checkpoints import ObjectCheckpoints, ObjectStoreUnavailable

_CATALOG_SCHEMAS = {"information_schema", "pg_catalog"}


def _referenced(connection: duckdb.DuckDBPyConnection, sql: str) -> tuple[set[str], bool]:
    """The table names ``sql`` reads and whether it reads the catalog, from DuckDB's own parse tree (which,
    unlike ``get_table_names``, takes ``?`` parameters and sees ``information_schema``)."""
    tree = json.loads(connection.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    names, catalog, nodes = set(), False, [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
                schema = (node.get("schema_name") or "").lower()
                catalog |= schema in _CATALOG_SCHEMAS or node["table_name"].lower().startswith("duckdb_")
                if schema in ("", "main"):
                    names.add(node["table_name"])
            nodes.extend(node.values())
    return names, catalog


class ObjectTableStore(dg.ConfigurableResource):
    """``DuckDBStore``'s operations over Parquet objects shared by every host (see the module docstring)."""

    url: str = Field(description="Where the tables live: s3://bucket/prefix (endpoint and keys from the AWS variables).")
    cache_dir: str = Field(description="Local directory for downloaded versions (reused while current) and staging.")
    memory_limit: str = Field(default="1GB", description="DuckDB's memory cap in this process, as DuckDBStore's.")

    @property
    def path(self) -> str:
        """Not a database file (there is none): callers that stage large Parquet files beside the store's path
        (``assets/raw.py``) stage them in ``cache_dir``, from where ``publish`` uploads them."""
        return str(Path(self.cache_dir) / "staging")

    frame = staticmethod(DuckDBStore.frame)

    def _objects(self, writing: bool = False) -> ObjectCheckpoints:
        """Its fsspec client, keys and error messages; before a write, a missing bucket fails with its name."""
        objects = ObjectCheckpoints(self.url, self.cache_dir)
        if writing:
            objects._check_bucket()
        return objects

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        connection = duckdb.connect()
        try:
            connection.execute(f"SET memory_limit = '{self.memory_limit}'")
            connection.execute("SET temp_directory = ?", [str(Path(self.cache_dir) / "spill")])
            yield connection
        finally:
            connection.close()

    # -- pointers --

    @staticmethod
    def _slice_name(column: str, value: str) -> str:
        return f"{quote(column, safe='')}={quote(str(value), safe='')}.json"

    def _pointer(self, objects: ObjectCheckpoints, *parts: str) -> dict | None:
        data = objects._read("current", *parts)
        return json.loads(data) if data else None

    def _slices(self, objects: ObjectCheckpoints, table: str) -> list[dict]:
        try:
            keys = objects.fs.find(objects._key("current", table) + "/")
        except FileNotFoundError:  # no bucket: named by ``_missing``
            return []
        except Exception as error:
            raise objects._failed("list", objects.url("current", table), error) from error
        pointers = [self._pointer(objects, table, key.rsplit("/", 1)[1]) for key in sorted(keys)]
        return [p for p in pointers if p is not None]  # a slice deleted between the listing and the read

    def _parts(self, objects: ObjectCheckpoints, table: str) -> list[dict]:
        """The pointers that make up ``table`` now: its whole-table one, or its slices; none when absent."""
        whole = self._pointer(objects, f"{table}.json")
        return [whole] if whole else self._slices(objects, table)

    def tables(self) -> set[str]:
        """The tables in the store (one listing of the pointers); none when nothing was written yet."""
        objects = self._objects()
        try:
            keys = objects.fs.find(objects._key("current") + "/")
        except FileNotFoundError:
            return set()
        except Exception as error:
            raise objects._failed("list", objects.url("current"), error) from error
        prefix = objects._key("current") + "/"
        return {key[len(prefix):].split("/", 1)[0].removesuffix(".json") for key in keys if key.endswith(".json")}

    # -- writes --

    def _stage(self, table: str, data: pd.DataFrame | Path) -> tuple[Path, list[list[str]], int, bool]:
        """A local Parquet file of ``data`` (written by DuckDB, so the types are DuckDBStore's), its columns and
        rows, and whether it is a staging copy (moved into the cache after upload) or the caller's file."""
        with self._connection() as connection:
            if isinstance(data, Path):
                columns = connection.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(data)]).fetchall()
                rows = connection.execute("SELECT count(*) FROM read_parquet(?)", [str(data)]).fetchone()[0]
                return data, [[r[0], r[1]] for r in columns], int(rows), False
            local = Path(self.cache_dir) / "staging" / f"{table}-{uuid.uuid4().hex[:12]}.parquet"
            local.parent.mkdir(parents=True, exist_ok=True)
            connection.register("incoming", data)
            target = str(local).replace("'", "''")
            connection.execute(f"COPY (SELECT * FROM incoming) TO '{target}' (FORMAT parquet)")
            columns = [[r[0], r[1]] for r in connection.execute("DESCRIBE SELECT * FROM incoming").fetchall()]
        return local, columns, len(data), True

    def _upload(self, objects: ObjectCheckpoints, table: str, data: pd.DataFrame | Path, **pointer) -> dict:
        """Upload ``data`` as a new immutable version of ``table``; the pointer to write once all are uploaded."""
        local, columns, rows, staged = self._stage(table, data)
        size = local.stat().st_size
        version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]
        key = f"versions/{table}/{version}.parquet"
        cached = self._cached(key)
        try:
            objects.fs.put_file(str(local), objects._key(key))
            cached.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, cached) if staged else os.link(local, cached)  # this host reads it without a download
        except OSError as error:
            if not cached.exists():
                raise objects._failed("upload to", objects.url(key), error) from error
        except Exception as error:  # botocore, aiohttp and s3fs raise many types; all mean the same here
            raise objects._failed("upload to", objects.url(key), error) from error
        finally:
            if staged:
                local.unlink(missing_ok=True)
        return {"table": table, "version": version, "object": key, "bytes": size, "rows": rows, "columns": columns,
                "slice": None, "published": None, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **pointer}

    def _flip(self, objects: ObjectCheckpoints, pointer: dict) -> None:
        """The last write of a version: from here on readers get it."""
        name = self._slice_name(pointer["slice"]["column"], pointer["slice"]["value"]) if pointer["slice"] else None
        parts = ("current", pointer["table"], name) if name else ("current", f"{pointer['table']}.json")
        try:
            objects.fs.pipe_file(objects._key(*parts), json.dumps(pointer, indent=1).encode())
        except Exception as error:
            raise objects._failed("write", objects.url(*parts), error) from error

    def replace_table(self, table: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> int:
        """Replace ``table`` with ``rows``; ``columns`` gives the schema when rows are empty."""
        frame = self.frame(table, rows, columns)
        objects = self._objects(writing=True)
        if self._slices(objects, table):
            raise ValueError(f"table '{table}' in {self.url} is written in slices (replace_rows); replacing it whole "
                             f"would leave them behind: delete {objects.url('current', table)}/ first")
        self._flip(objects, self._upload(objects, table, frame))
        return len(frame)

    def replace_rows(self, table: str, rows: Sequence[dict], where_column: str, where_value: str,
                     columns: Sequence[str] | None = None) -> int:
        """Replace the slice of ``table`` where ``where_column = where_value`` (its own object and pointer, so
        hosts writing other slices never contend); ``columns`` gives the schema when rows are empty."""
        frame = self.frame(table, rows, columns)
        objects = self._objects(writing=True)
        if self._pointer(objects, f"{table}.json"):
            raise ValueError(f"table '{table}' in {self.url} was written whole (replace_table), not in slices")
        other = next((p["slice"]["column"] for p in self._slices(objects, table)
                      if p["slice"]["column"] != where_column), None)
        if other:
            raise ValueError(f"table '{table}' in {self.url} is sliced by '{other}', not '{where_column}'")
        self._flip(objects, self._upload(objects, table, frame, slice={"column": where_column, "value": where_value}))
        return len(frame)

    def publish(self, asset: str, data_version: str, run_id: str, tables: dict[str, pd.DataFrame | Path]) -> None:
        """Upload every table, then flip their pointers, ``asset``'s own table (which records the version it
        holds) last but for its ``table_versions`` row (see ``assets/_tables.py``)."""
        objects = self._objects(writing=True)
        published = {"asset": asset, "data_version": data_version, "dagster_run_id": run_id}
        pointers = [self._upload(objects, name, data, published=published) for name, data in tables.items()]
        row = pd.DataFrame([{**published, "published_at": pd.Timestamp.now("UTC").tz_localize(None)}])
        pointers.append(self._upload(objects, TABLE_VERSIONS, row, slice={"column": "asset", "value": asset}))
        for pointer in sorted(pointers, key=lambda p: (p["table"] == TABLE_VERSIONS, p["table"] == asset)):
            self._flip(objects, pointer)

    # -- reads --

    def _cached(self, key: str) -> Path:
        return Path(self.cache_dir) / key

    def _local(self, objects: ObjectCheckpoints, pointer: dict) -> Path:
        """The version's object in the local cache, downloaded when missing (immutable: never stale)."""
        cached = self._cached(pointer["object"])
        if cached.is_file() and cached.stat().st_size == pointer["bytes"]:
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        download = cached.with_name(f".download-{uuid.uuid4().hex[:8]}-{cached.name}")
        try:
            objects.fs.get_file(objects._key(pointer["object"]), str(download))
            if download.stat().st_size != pointer["bytes"]:
                raise ObjectStoreUnavailable(
                    f"{objects.url(pointer['object'])} has {download.stat().st_size} bytes, its pointer says "
                    f"{pointer['bytes']}: rematerialize {writer_of(pointer['table'])}")
            os.replace(download, cached)
        except FileNotFoundError:
            raise MissingTable(f"table '{pointer['table']}': {objects.url(pointer['object'])} is gone (deleted by "
                               f"hand or a lifecycle rule); rematerialize {writer_of(pointer['table'])}") from None
        except ObjectStoreUnavailable:
            raise
        except Exception as error:
            raise objects._failed("download", objects.url(pointer["object"]), error) from error
        finally:
            download.unlink(missing_ok=True)
        return cached

    def _view(self, connection, objects: ObjectCheckpoints, table: str, parts: list[dict]) -> None:
        """``table`` as a view over its parts' local copies; empty slices only give the schema when all are."""
        filled = [p for p in parts if p["rows"]] or parts[:1]
        files = ", ".join("'" + str(self._local(objects, p)).replace("'", "''") + "'" for p in filled)
        connection.execute(f'CREATE OR REPLACE VIEW "{table}" AS '
                           f'SELECT * FROM read_parquet([{files}], union_by_name = true)')

    @staticmethod
    def _stub(connection, table: str, parts: list[dict]) -> None:
        """An empty table with ``table``'s columns (from its pointers), for catalog queries without a download."""
        columns = {}
        for part in parts:
            columns.update({name: kind for name, kind in part["columns"] if name not in columns})
        definitions = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
        connection.execute(f'CREATE TABLE "{table}" ({definitions})')

    def _run(self, sql: str, parameters: Sequence | None, pinned: dict[str, list[dict]] | None = None) -> list[dict]:
        objects, pinned = self._objects(), pinned or {}
        with self._connection() as connection:
            names, catalog = _referenced(connection, sql)
            for name in names | set(pinned):
                parts = pinned.get(name) or self._parts(objects, name)
                if parts:
                    self._view(connection, objects, name, parts)
            for name in (self.tables() - names - set(pinned)) if catalog else ():
                self._stub(connection, name, self._parts(objects, name))
            try:
                cursor = connection.execute(sql, parameters or [])
            except duckdb.CatalogException as error:
                missing = _MISSING_TABLE.search(str(error))
                if missing is None:
                    raise
                raise self._missing(objects, missing.group(1), str(error).splitlines()[0]) from error
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _missing(self, objects: ObjectCheckpoints, table: str, detail: str) -> Exception:
        bucket = objects._path.split("/", 1)[0]
        if self.url.startswith(("s3://", "s3a://")) and not objects.fs.exists(bucket):
            return MissingDatabase(f"bucket '{bucket}' of {self.url} does not exist: create it (e.g. `aws s3 mb "
                                   f"s3://{bucket}`), then materialize {writer_of(table)} and its upstream")
        return MissingTable(f"table '{table}' is not in {self.url} (no {objects.url('current', table)}.json: nothing "
                            f"wrote it there yet); it is "
                            f"written by {writer_of(table)}: materialize that first ({detail})")

    def query(self, sql: str, parameters: Sequence | None = None, *, table: str | None = None) -> list[dict]:
        """Rows of ``sql`` over the tables it names, each at its current version."""
        return self._run(sql, parameters)

    def rows(self, table: str) -> list[dict]:
        return self.query(f'SELECT * FROM "{table}"', table=table)

    def count(self, table: str) -> int:
        return int(self.query(f'SELECT count(*) AS n FROM "{table}"', table=table)[0]["n"])

    def published_rows(self, table: str, sql: str | None = None) -> tuple[list[dict], tuple[str, str] | None]:
        """Rows of ``table`` (or of ``sql`` over it) and the (data version, run) that ``publish`` recorded for it,
        both from one pointer: a concurrent publish cannot pair one version's rows with another's label."""
        objects = self._objects()
        pointer = self._pointer(objects, f"{table}.json")
        published = (pointer or {}).get("published")
        if not published or published["asset"] != table:
            return [], None
        return self._run(sql or f'SELECT * FROM "{table}"', None, {table: [pointer]}), \
            (published["data_version"], published["dagster_run_id"])

    def close_kept_open(self) -> None:
        """Nothing is kept open (each query has its own in-memory connection)."""
