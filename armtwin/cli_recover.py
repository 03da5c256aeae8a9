"""``armtwin recover``: rewrite a recording cut short by a crash (no footer, a torn last chunk) as a complete file.

Every record before the damage is read with the mcap package's stream reader (chunks CRC-checked, so nothing
corrupt is kept), and written again with its writer: schemas, channels, messages, metadata and attachments, then
the summary section and the index a complete MCAP file carries. A ``recovery`` metadata record says what was done.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="rewrite a crashed recording as a complete, indexed file",
        description="Read a session file up to its damage (a device killed while recording leaves no footer and "
        "maybe a torn last chunk) and write everything intact to a new, complete MCAP file with its index. "
        "'armtwin info' reads a broken file too; recover it to open it in tools that need the index.",
        epilog="examples:\n  armtwin recover crashed.mcap -o fixed.mcap\n\n"
        "exit status: 0 = written; 2 = unreadable input (not MCAP, nothing intact) or output refused",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("broken", type=Path, help="the damaged session file")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the recovered file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(run=run)


def recover(broken: Path, output: Path) -> dict[str, Any]:
    """Copy every intact record of ``broken`` into a complete ``output``; returns what was kept and why it stopped."""
    from mcap.records import Attachment, Channel, Chunk, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader, breakup_chunk
    from mcap.writer import CompressionType, Writer

    counts = {"messages": 0, "channels": 0, "schemas": 0, "metadata": 0, "attachments": 0, "chunks": 0}
    stopped = ""
    with open(broken, "rb") as src, open(output, "wb") as dst:
        w = Writer(dst, chunk_size=64 * 1024, compression=CompressionType.ZSTD)
        w.start(profile="", library="armtwin recover")
        schemas: dict[int, int] = {0: 0}
        channels: dict[int, int] = {}

        def copy(rec: object) -> None:
            if isinstance(rec, Schema):
                if rec.id not in schemas:
                    schemas[rec.id] = w.register_schema(rec.name, rec.encoding, rec.data)
                    counts["schemas"] += 1
            elif isinstance(rec, Channel):
                if rec.id not in channels and rec.schema_id in schemas:
                    channels[rec.id] = w.register_channel(rec.topic, rec.message_encoding, schemas[rec.schema_id],
                                                          dict(rec.metadata))
                    counts["channels"] += 1
            elif isinstance(rec, Message):
                if rec.channel_id in channels:
                    w.add_message(channels[rec.channel_id], rec.log_time, rec.data, rec.publish_time, rec.sequence)
                    counts["messages"] += 1
            elif isinstance(rec, Metadata):
                w.add_metadata(rec.name, dict(rec.metadata))
                counts["metadata"] += 1
            elif isinstance(rec, Attachment):
                w.add_attachment(rec.create_time, rec.log_time, rec.name, rec.media_type, rec.data)
                counts["attachments"] += 1

        try:
            for rec in StreamReader(src, skip_magic=False, emit_chunks=True).records:
                if isinstance(rec, Chunk):
                    inner = list(breakup_chunk(rec, validate_crc=True))  # a chunk is kept whole or not at all
                    counts["chunks"] += 1
                    for r in inner:
                        copy(r)
                else:
                    copy(rec)
        except Exception as exc:  # the damage: everything before it is intact
            stopped = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        note = {"source": str(broken), "stopped_at": stopped or "end of file (it was complete)",
                "messages": counts["messages"]}
        w.add_metadata("recovery", {k: json.dumps(v) for k, v in note.items()})  # JSON values, as every record
        w.finish()
    return {**counts, "stopped": stopped}


def run(args: argparse.Namespace) -> int:
    if not args.broken.exists():
        print(f"error: {args.broken}: no such file", file=sys.stderr)
        return 2
    if args.output.exists() and not args.force:
        print(f"error: {args.output} exists: give another -o path, or --force to overwrite it", file=sys.stderr)
        return 2
    if args.output.resolve() == args.broken.resolve():
        print("error: write the recovered file somewhere else than the broken one (-o)", file=sys.stderr)
        return 2
    try:
        res = recover(args.broken, args.output)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if res["messages"] == 0 and res["metadata"] == 0:
        args.output.unlink(missing_ok=True)
        print(f"error: {args.broken}: nothing intact to recover ({res['stopped'] or 'empty'})", file=sys.stderr)
        return 2
    how = f"damaged ({res['stopped']})" if res["stopped"] else "complete already"
    print(f"recovered {args.output}: {res['messages']} messages in {res['chunks']} chunks, {res['channels']} "
          f"channels, {res['metadata']} metadata records; the input was {how}")
    return 0
