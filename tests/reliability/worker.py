"""Worker processes of the reliability tests: ``python worker.py ROLE CONFIG_JSON``.

Each role is a plain function below.  A worker finds the manager the way a
user's process does (``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY``), prints
``ready`` once it is connected and has a replica, waits for ``go`` on stdin
where the scenario needs a common start, and writes its result as msgpack to
``config["out"]``.  Anything unexpected is raised: the exit code says so.

(What another user can do is probed by :mod:`probe`, which needs nothing
but the standard library.)
"""

from __future__ import annotations

import json
import random
import select
import sys
import time
from typing import Any

import msgpack


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"expected {word!r} on stdin, got {line!r}")


def stdin_has(word: str) -> bool:
    """True when ``word`` arrived on stdin (non-blocking)."""
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if not ready:
        return False
    line = sys.stdin.readline()
    return line.strip() == word or line == ""


def dump(cfg: dict[str, Any], result: Any) -> None:
    with open(cfg["out"], "wb") as f:
        f.write(msgpack.packb(result, use_bin_type=True))


# -- concurrency ------------------------------------------------------------------------


def writer(cfg: dict[str, Any]) -> None:
    """Insert ``count`` distinct records, one call each; report their ids."""
    from helpers import sealed  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.store import CheckoutSessions as CS

    tag = cfg["tag"]
    with papertiger.use_namespace(cfg["ns"]):
        CS.count()
        say("ready")
        wait_for("go")
        ids = []
        for i in range(cfg["count"]):
            record = CS.insert(sealed({"customer": f"cus_{tag}_{i % 50}", "writer": tag, "i": i}))
            ids.append(record["id"])
        # read-your-writes, in this process
        unseen = [rid for rid in ids[-100:] if CS.get(rid)["writer"] != tag]
    dump(cfg, {"ids": ids, "unseen": unseen})


def patcher(cfg: dict[str, Any]) -> None:
    """Patch every record ``rounds`` times with keys of its own; check each reply."""
    import papertiger
    from papertiger.store import CheckoutSessions as CS

    tag = cfg["tag"]
    anomalies = []
    patches = 0
    with papertiger.use_namespace(cfg["ns"]):
        CS.count()
        say("ready")
        wait_for("go")
        for r in range(cfg["rounds"]):
            for rid in cfg["ids"]:
                key = f"{tag}_{r}"
                merged = CS.patch(rid, {"metadata": {key: str(r)}, f"last_{tag}": r})
                patches += 1
                if merged["metadata"].get(key) != str(r) or merged[f"last_{tag}"] != r:
                    anomalies.append(f"patch of {rid} returned without {key}")
                if r % 10 == 0 and CS.get(rid)["metadata"].get(key) != str(r):
                    anomalies.append(f"{rid}: own patch {key} not visible after it returned")
    dump(cfg, {"patches": patches, "anomalies": anomalies})


def linear(cfg: dict[str, Any]) -> None:
    """Mixed reads and writes on a few registers; record every operation's interval."""
    from helpers import is_intact, sealed  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.engine.connection import current_client
    from papertiger.store import CheckoutSessions as CS

    rng = random.Random(cfg["seed"])
    tag, keys = cfg["tag"], cfg["keys"]
    history: list[list[Any]] = []
    torn = 0
    now = time.monotonic_ns
    with papertiger.use_namespace(cfg["ns"]) as ns:
        client = current_client()
        replica = client.replica
        CS.count()
        say("ready")
        wait_for("go")
        n = 0
        for i in range(cfg["ops"]):
            if cfg.get("until_stop") and i % 64 == 63 and stdin_has("stop"):
                break
            if cfg.get("lag") and i % 250 == 249:
                time.sleep(cfg["lag"])  # fall behind: others' writes retire our segment
            key = rng.choice(keys)
            if rng.random() < cfg["write_ratio"]:
                n += 1
                version = [tag, n]
                record = sealed({"id": key, "v": version, "pad": "x" * rng.randrange(0, 400)})
                wire = CS._prepare(record).wire()
                t0 = now()
                seq, _ = client.request(["put", CS.table_name, CS.object_name, ns, "upsert", wire])
                t1 = now()
                history.append(["w", key, version, t0, t1, seq])
            else:
                t0 = now()
                try:
                    got = CS.get(key)
                    value = got["v"]
                    torn += not is_intact(got)
                except papertiger.NotFound:
                    value = None
                seq = replica.seq
                t1 = now()
                history.append(["r", key, value, t0, t1, seq])
    dump(cfg, {"history": history, "torn": torn, "reloads": replica.reader.reloads})


# -- torn reads ------------------------------------------------------------------------------


def torn_writer(cfg: dict[str, Any]) -> None:
    """Rewrite the records it owns (update and patch) until told to stop."""
    from helpers import sealed  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.store import CheckoutSessions as CS

    rng = random.Random(cfg["seed"])
    lo, hi = cfg["payload"]
    writes = 0
    with papertiger.use_namespace(cfg["ns"]):
        current = {rid: CS.get(rid) for rid in cfg["ids"]}
        say("ready")
        wait_for("go")
        while True:
            for _ in range(20):
                rid = rng.choice(cfg["ids"])
                payload = rng.randbytes(rng.randrange(lo, hi))
                if rng.random() < 0.5:
                    fields = {k: v for k, v in current[rid].items() if k != "crc"}
                    fields.update(payload=payload, gen=writes)
                    current[rid] = CS.update(sealed(fields))
                else:
                    fields = {k: v for k, v in current[rid].items() if k != "crc"}
                    fields.update(note=payload.hex()[:64], gen=writes)
                    crc = sealed(fields)["crc"]
                    current[rid] = CS.patch(
                        rid, {"note": fields["note"], "gen": writes, "crc": crc}
                    )
                writes += 1
            if stdin_has("stop"):
                break
    dump(cfg, {"writes": writes})


def torn_reader(cfg: dict[str, Any]) -> None:
    """``reads`` reads (gets, and a list page now and then), each record's checksum verified."""
    from helpers import is_intact  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.engine.connection import current_client
    from papertiger.store import CheckoutSessions as CS

    rng = random.Random(cfg["seed"])
    ids = cfg["ids"]
    mismatches: list[str] = []
    checked = 0
    get = CS.get
    choice = rng.choice
    with papertiger.use_namespace(cfg["ns"]):
        replica = current_client().replica
        CS.count()
        say("ready")
        wait_for("go")
        for i in range(cfg["reads"]):
            try:
                if i % 500 == 0:
                    page = CS.list(limit=100)
                    records = page.data
                    if len(records) != min(100, len(ids)):
                        mismatches.append(f"a page of {len(records)} records")
                    if i % 20000 == 0 and cfg.get("lag"):
                        time.sleep(cfg["lag"])  # fall behind: the log moves on meanwhile
                else:
                    rid = choice(ids)
                    records = [get(rid)]
                    if records[0]["id"] != rid:
                        mismatches.append(f"asked for {rid}, got {records[0]['id']}")
                for record in records:
                    checked += 1
                    if not is_intact(record):
                        mismatches.append(f"torn record {record.get('id')}")
            except Exception as exc:  # a torn entry could fail to decode: count it
                mismatches.append(f"{type(exc).__name__}: {exc}")
        reloads = replica.reader.reloads
        effects = replica.effects_applied
    dump(
        cfg,
        {
            "reads": cfg["reads"],
            "records": checked,
            "mismatches": mismatches[:20],
            "mismatch_count": len(mismatches),
            "reloads": reloads,
            "effects": effects,
        },
    )


# -- faults ---------------------------------------------------------------------------------


def loop_reader(cfg: dict[str, Any]) -> None:
    """Read the whole namespace again and again until killed (or told to stop)."""
    from helpers import is_intact  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.store import CheckoutSessions as CS

    rounds = 0
    bad = 0
    with papertiger.use_namespace(cfg["ns"]):
        while True:
            records = CS.list_namespace()
            bad += sum(not is_intact(r) for r in records)
            if rounds == 0:
                say("ready")
            rounds += 1
            if rounds % 5 == 0 and stdin_has("stop"):
                break
    dump(cfg, {"rounds": rounds, "bad": bad, "count": len(records)})


def marker_reader(cfg: dict[str, Any]) -> None:
    """Follow the store; at each marker record, report what the namespace holds."""
    from helpers import is_intact  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.engine.connection import current_client
    from papertiger.store import CheckoutSessions as CS

    seen = []
    with papertiger.use_namespace(cfg["ns"]):
        replica = current_client().replica
        CS.count()
        say("ready")
        for marker in cfg["markers"]:
            while True:
                try:
                    CS.get(marker)
                    break
                except papertiger.NotFound:
                    CS.count()
            records = CS.list_namespace()
            seen.append(
                {
                    "marker": marker,
                    "ids": sorted(r["id"] for r in records),
                    "crcs": sorted(r["crc"] for r in records),
                    "intact": all(is_intact(r) for r in records),
                    "reloads": replica.reader.reloads,
                }
            )
            say(f"saw {marker}")
    dump(cfg, {"seen": seen})


def batch(cfg: dict[str, Any]) -> None:
    """One large insert_many, timed; reports how it ended."""
    from helpers import sealed  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.store import CheckoutSessions as CS

    with papertiger.use_namespace(cfg["ns"]):
        CS.count()
        records = [
            sealed({"id": f"bat_{i}", "customer": "cus_batch", "i": i, "pad": "y" * 100})
            for i in range(cfg["n"])
        ]
        say("ready")
        wait_for("go")
        t0 = time.monotonic_ns()
        try:
            CS.insert_many(records)
            outcome = "ok"
        except papertiger.StoreUnavailable:
            outcome = "unavailable"
        except papertiger.StoreError as exc:
            outcome = type(exc).__name__
        t1 = time.monotonic_ns()
    dump(cfg, {"outcome": outcome, "t0": t0, "t1": t1})


def watch_reader(cfg: dict[str, Any]) -> None:
    """Keep a replica current; on 'check', report what the batch namespace holds."""
    from helpers import is_intact  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.store import CheckoutSessions as CS

    polls = 0
    with papertiger.use_namespace(cfg["ns"]):
        CS.count()
        say("ready")
        while not stdin_has("check"):
            try:
                CS.count()
            except papertiger.StoreUnavailable:
                pass
            polls += 1
            time.sleep(0.0005)
        try:
            count = CS.count()
            records = CS.list_namespace()
            result = {
                "outcome": "read",
                "count": count,
                "listed": len(records),
                "distinct": len({r["id"] for r in records}),
                "intact": all(is_intact(r) for r in records),
            }
        except papertiger.StoreUnavailable as exc:
            result = {"outcome": "unavailable", "message": str(exc)}
    dump(cfg, {**result, "polls": polls})


def shm_full(cfg: dict[str, Any]) -> None:
    """Fill the store's shared memory until a write is refused; check nothing broke.

    Runs its own manager (in a private, size-capped /dev/shm, or under
    ``PAPERTIGER_SHM_MAX_BYTES``) and reports what it saw.
    """
    from helpers import is_intact, sealed, segments_of  # type: ignore[import-not-found,unused-ignore]

    import papertiger
    from papertiger.engine.client import Client
    from papertiger.engine.connection import current_client
    from papertiger.store import CheckoutSessions as CS

    rng = random.Random(5)
    result: dict[str, Any] = {"problems": []}
    problems = result["problems"]
    with papertiger.serve(
        segment_bytes=cfg["segment_bytes"], checkpoint_bytes=cfg["checkpoint_bytes"]
    ) as server:
        prefix = server.control[:-2]
        client = current_client()

        def seq() -> int:
            return int(client.request(["ping"])[0])

        accepted: list[str] = []
        with papertiger.use_namespace("full"):
            for i in range(cfg["max_records"]):
                record = sealed({"id": f"cs_full{i}", "payload": rng.randbytes(cfg["size"])})
                before = seq()
                try:
                    CS.insert(record)
                except papertiger.StoreError as exc:
                    result["rejected"] = {"kind": type(exc).__name__, "message": str(exc)}
                    if seq() != before:
                        problems.append("the refused write moved the log")
                    try:
                        CS.get(record["id"])
                        problems.append("the refused record is visible")
                    except papertiger.NotFound:
                        pass
                    # The same write again: refused again, never 'already exists'.  (It may
                    # go through: retired segments free their pages once the last reader
                    # that mapped them moves on, which reads just did.)
                    try:
                        CS.insert(record)
                        accepted.append(record["id"])
                        result["retry"] = "accepted"
                    except papertiger.AlreadyExists:
                        problems.append("the refused write had been applied")
                    except papertiger.StoreError:
                        result["retry"] = "refused"
                    break
                accepted.append(record["id"])
            result["accepted"] = len(accepted)
            result["shm_bytes"] = server.stats()["log"]["shm_bytes"]
            # still serving, and every accepted record readable and intact, here ...
            client.request(["ping"])
            records = CS.list_namespace()
            if sorted(r["id"] for r in records) != sorted(accepted):
                problems.append(f"{len(records)} records readable, {len(accepted)} accepted")
            if not all(is_intact(r) for r in records):
                problems.append("a stored record is torn")
            # ... and by a new reader, which starts from the newest checkpoint
            other = Client(server.address, server.authkey)
            try:
                count = other.replica.count(CS.table_name, ("full",))
                if count != len(accepted):
                    problems.append(f"a new reader sees {count} of {len(accepted)} records")
            finally:
                other.close()
        result["manager_alive"] = server.process.alive()
    result["returncode"] = server.process.proc.returncode
    result["left"] = sorted(segments_of(prefix))
    dump(cfg, result)


ROLES = {
    "writer": writer,
    "patcher": patcher,
    "linear": linear,
    "torn_writer": torn_writer,
    "torn_reader": torn_reader,
    "loop_reader": loop_reader,
    "marker_reader": marker_reader,
    "batch": batch,
    "watch_reader": watch_reader,
    "shm_full": shm_full,
}


if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
