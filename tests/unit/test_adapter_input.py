"""Bad source files are named (file and row), never half-read in silence; real LOBSTER time
strings with float artefacts are read (issue 9 section 4, issue 10 section 1)."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from jobs.cli import main as cli_main
from udfs.market.adapters.binance import BinanceAdapter, verify_binance
from udfs.market.adapters.lobster import (
    LobsterFileError,
    iter_lobster_events,
    parse_lobster_time,
    parse_message_line,
)
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER, Source
from udfs.schema import Side

ROOT = Path(__file__).parents[2]
SHARED = ROOT.parent / "shared" / "data"
LOBSTER_L10 = SHARED / "lobster" / "AAPL_2012-06-21_L10_first998"
"""a real shared LOBSTER file, level 10 (levels revealed from deeper in the book too)"""
BINANCE_CAPTURE = [
    SHARED / "binance" / "usdm" / "btcusdt_20240718.gz",
    SHARED / "binance" / "usdm" / "btcusdt_20240719.gz",
]


def _pair(folder: Path) -> tuple[Path, Path]:
    return next(folder.glob("*_message_*.csv")), next(folder.glob("*_orderbook_*.csv"))


def _copy_sample(tmp_path: Path, edit_message=None, edit_orderbook=None) -> tuple[Path, Path]:
    msg, ob = SAMPLE_LOBSTER
    m_lines = msg.read_text().splitlines()
    o_lines = ob.read_text().splitlines()
    if edit_message:
        m_lines = edit_message(m_lines)
    if edit_orderbook:
        o_lines = edit_orderbook(o_lines)
    (tmp_path / msg.name).write_text("\n".join(m_lines) + "\n")
    (tmp_path / ob.name).write_text("\n".join(o_lines) + "\n")
    return tmp_path / msg.name, tmp_path / ob.name


# ---- LOBSTER time strings -------------------------------------------------------------------


def test_time_with_float_artefacts_rounds_half_even_to_the_ns() -> None:
    assert parse_lobster_time("43002.632812672004") == 43_002_632_812_672
    assert parse_lobster_time("43002.6328126725") == 43_002_632_812_672  # tie -> even
    assert parse_lobster_time("43002.6328126735") == 43_002_632_812_674  # tie -> even
    assert parse_lobster_time("43002.63281267250001") == 43_002_632_812_673
    assert parse_lobster_time("34200.017459616999608") == 34_200_017_459_617
    assert parse_lobster_time("3.4200e+04") == 34_200 * 10**9
    assert parse_lobster_time("34200.") == 34_200 * 10**9
    assert parse_lobster_time(" 34200.5\r") == 34_200_500_000_000
    # what LOBSTER itself writes is unchanged
    assert parse_lobster_time("34200.00426064") == 34_200_004_260_640
    assert parse_lobster_time("57599.999999999") == 57_599_999_999_999


@pytest.mark.parametrize(
    "bad", ["", "-1.5", "+1", "nan", "inf", "1e5", "86400", "1_000", "1 2", "0x10", "1.2.3", "."]
)
def test_malformed_time_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_lobster_time(bad)


def test_real_file_with_float_artefact_times_verifies_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real LOBSTER file whose times were written as 17-digit floats (as other tools do):
    every row is read, the events are the original ones, verify-book matches every row."""
    msg, ob = _pair(LOBSTER_L10)
    lines = msg.read_text().splitlines()
    rewritten = []
    artefacts = 0
    for line in lines:
        t, rest = line.split(",", 1)
        text = format(float(Decimal(t)), ".17g")
        artefacts += len(text.partition(".")[2]) > 9
        rewritten.append(f"{text},{rest}")
    assert artefacts > len(lines) // 2  # the rewrite really has more decimals than ns
    (tmp_path / msg.name).write_text("\n".join(rewritten) + "\n")
    (tmp_path / ob.name).symlink_to(ob)
    original = [ev.ts_event for ev in iter_lobster_events(msg, ob)]
    again = [ev.ts_event for ev in iter_lobster_events(tmp_path / msg.name, tmp_path / ob.name)]
    assert again == original
    # the command a user runs: `bookstream verify-book --lobster MESSAGE ORDERBOOK`
    status = cli_main(
        ["verify-book", "--lobster", str(tmp_path / msg.name), str(tmp_path / ob.name)]
    )
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0
    assert r["messages"] == len(lines)
    assert r["checked"] == len(lines) - 1
    assert r["matched"] == r["checked"]
    assert r["book_errors"] == 0


# ---- LOBSTER bad lines: named, refused, the stream stops there ------------------------------


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        (5, "0", "direction"),
        (5, "2", "direction"),
        (5, "1.0", "direction"),
        (5, "true", "direction"),
        (1, "9", "type"),
        (3, "-5", "size"),
        (4, "0", "price"),
        (3, "1e3", "size"),
        (2, "99999999999999999999", "order_id"),
    ],
)
def test_bad_message_field_is_refused_with_file_and_row(
    tmp_path: Path, column: int, value: str, why: str
) -> None:
    def edit(lines: list[str]) -> list[str]:
        parts = lines[99].split(",")
        parts[column] = value
        lines[99] = ",".join(parts)
        return lines

    msg, ob = _copy_sample(tmp_path, edit_message=edit)
    with pytest.raises(LobsterFileError) as err:
        list(iter_lobster_events(msg, ob))
    assert err.value.row == 100 and err.value.file == str(msg)
    assert msg.name in str(err.value) and "row 100" in str(err.value) and why in str(err.value)


def test_direction_other_than_one_is_never_read_as_a_side() -> None:
    with pytest.raises(ValueError, match="direction"):
        parse_message_line("34200.1,1,5,100,5850000,0")
    assert parse_message_line("34200.1,1,5,100,5850000,-1")[5] == -1


def test_non_ascii_and_truncated_rows_are_named(tmp_path: Path) -> None:
    def cut(lines: list[str]) -> list[str]:
        lines[49] = lines[49][:7]
        return lines

    msg, ob = _copy_sample(tmp_path, edit_message=cut)
    with pytest.raises(LobsterFileError, match="row 50"):
        list(iter_lobster_events(msg, ob))
    msg2, ob = _copy_sample(tmp_path)
    ob.write_bytes(ob.read_bytes().replace(b"\n", b"\xe9\n", 3))
    with pytest.raises(LobsterFileError, match=r"orderbook_10\.csv row 1"):
        list(iter_lobster_events(msg2, ob))


@pytest.mark.parametrize("which", ["fewer", "more", "bad_row", "ragged"])
def test_misaligned_pair_is_named(tmp_path: Path, which: str) -> None:
    edits = {
        "fewer": lambda lines: lines[:500],
        "more": lambda lines: [*lines, lines[-1]],
        "bad_row": lambda lines: [*lines[:300], lines[300].replace(",", ";", 1), *lines[301:]],
        "ragged": lambda lines: [*lines[:300], lines[300] + ",1,2", *lines[301:]],
    }
    msg, ob = _copy_sample(tmp_path, edit_orderbook=edits[which])
    with pytest.raises(LobsterFileError) as err:
        list(iter_lobster_events(msg, ob))
    assert err.value.file == str(ob)
    assert err.value.row == {"fewer": 501, "more": 1000, "bad_row": 301, "ragged": 301}[which]


def test_source_flushes_what_it_read_and_names_the_bad_row(tmp_path: Path) -> None:
    """Through a Source (what the publisher reads): the events before the bad row come out,
    the bad row is a bad line (dead letter) with file and row, the stop is a problem."""
    good = list(Source(lobster=[SAMPLE_LOBSTER]).events())

    def edit(lines: list[str]) -> list[str]:
        parts = lines[399].split(",")
        parts[5] = "0"
        lines[399] = ",".join(parts)
        return lines

    msg, ob = _copy_sample(tmp_path, edit_message=edit)
    src = Source(lobster=[(msg, ob)])
    events = list(src.events())
    before = [e for e in good if e.seq < 400]
    assert [(e.seq, e.kind, e.price, e.size) for e in events] == [
        (e.seq, e.kind, e.price, e.size) for e in before
    ]
    assert [(b.file, b.line) for b in src.bad_lines] == [(str(msg), 400)]
    assert "direction" in src.bad_lines[0].reason
    problems = src.problems()
    assert problems["stopped_early"] == [
        src.bad_lines[0].file.rsplit("/", 1)[1] + " row 400: " + src.bad_lines[0].reason
    ]


# ---- Binance ---------------------------------------------------------------------------------


CAPTURE_HEAD_LINES = 2_000
"""The sample capture's first 2,000 lines (its snapshot, then about 20 s of diffs, tickers and
trades: some 17,000 records) carry every edit below; the whole capture would cost a second or
more per test and prove nothing more."""


def _rewrite_capture(tmp_path: Path, edit=list) -> Path:
    """The head of the sample capture, edited by ``edit`` (lines -> lines), as a capture file."""
    lines = gzip.decompress(SAMPLE_BINANCE[0].read_bytes()).splitlines(keepends=True)
    lines = lines[:CAPTURE_HEAD_LINES]
    out = tmp_path / SAMPLE_BINANCE[0].name
    if out.exists():
        out = tmp_path / "edited" / SAMPLE_BINANCE[0].name
        out.parent.mkdir()
    out.write_bytes(gzip.compress(b"".join(edit(lines))))
    return out


def test_binance_boolean_given_as_string_is_refused(tmp_path: Path) -> None:
    trades = []

    def edit(lines: list[bytes]) -> list[bytes]:
        for i, line in enumerate(lines):
            if b'"e":"trade"' in line and b'"m":false' in line:
                lines[i] = line.replace(b'"m":false', b'"m":"false"')
                trades.append(i + 1)
                break
        return lines

    path = _rewrite_capture(tmp_path, edit)
    src = Source(binance=[[path]])
    events = list(src.events())
    assert [(b.line, "m 'false' is not a JSON boolean" in b.reason) for b in src.bad_lines] == [
        (trades[0], True)
    ]
    # the string "false" was never taken for a side (it is truthy: it would have been BID)
    good = list(Source(binance=[[_rewrite_capture(tmp_path)]]).events())
    assert len(events) == len(good) - 1
    assert all(e.side in (Side.BID, Side.ASK, Side.NONE) for e in events)


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"t":', b'"t":"1"#'), (b'"T":', b'"T":"1"#'), (b'"E":', b'"E":true,"x":')],
)
def test_binance_numbers_given_as_strings_are_refused(
    tmp_path: Path, old: bytes, new: bytes
) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        for i, line in enumerate(lines):
            if b'"e":"trade"' in line:
                head, _, tail = line.partition(old)
                tail = tail.split(b",", 1)[1]
                lines[i] = head + new.split(b"#")[0] + b"," + tail
                break
        return lines

    src = Source(binance=[[_rewrite_capture(tmp_path, edit)]])
    list(src.events())
    assert len(src.bad_lines) == 1


def test_truncated_gzip_is_named_and_what_was_read_counts(tmp_path: Path) -> None:
    data = SAMPLE_BINANCE[0].read_bytes()
    cut = tmp_path / SAMPLE_BINANCE[0].name
    cut.write_bytes(data[: len(data) // 2])
    src = Source(binance=[[cut]])
    events = list(src.events())  # no exception escapes
    assert events
    assert len(src.bad_lines) == 1
    bad = src.bad_lines[0]
    assert bad.file == str(cut) and bad.line > 1000 and "unreadable" in bad.reason
    assert "stopped_early" in src.problems()


def test_chain_break_that_drops_the_rest_of_a_capture_is_reported(tmp_path: Path) -> None:
    """One lost diff in the middle of the first day: every later diff of the capture is
    dropped (the capture has a single snapshot); the Source says so and counts them."""
    dropped = []

    def edit(lines: list[bytes]) -> list[bytes]:
        diffs = [i for i, ln in enumerate(lines) if b'"e":"depthUpdate"' in ln]
        dropped.append(lines[diffs[len(diffs) // 2]])
        del lines[diffs[len(diffs) // 2]]
        return lines

    path = _rewrite_capture(tmp_path, edit)
    src = Source(binance=[[path]])
    list(src.events())
    breaks = src.problems()["chain_breaks"]
    ((inst, info),) = breaks.items()
    assert inst == "BTCUSDT.BINANCE_USDM"
    assert info["resyncs"] == 1 and info["diffs_dropped_unsynced"] > 100
    assert "pu=" in info["first_break"]
    assert Source(binance=[[_rewrite_capture(tmp_path)]]).problems() == {}
    assert json.loads(dropped[0].split(b" ", 1)[1])["data"]["e"] == "depthUpdate"


@pytest.mark.slow  # whole shared captures: `make test` runs it, `make check` not
@pytest.mark.skipif(not BINANCE_CAPTURE[0].is_file(), reason="shared data not present")
def test_real_capture_still_verifies() -> None:
    r = verify_binance(BINANCE_CAPTURE)
    assert r["ok"] and r["bad_lines"] == 0


def test_binance_adapter_dict_levels_are_refused(tmp_path: Path) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        for i, line in enumerate(lines):
            if b'"e":"depthUpdate"' in line and b'"b":[[' in line:
                obj = json.loads(line.split(b" ", 1)[1])
                obj["data"]["b"] = {"12": "34"}
                lines[i] = line.split(b" ", 1)[0] + b" " + json.dumps(obj).encode() + b"\n"
                break
        return lines

    adapter = BinanceAdapter([_rewrite_capture(tmp_path, edit)])
    list(adapter)
    assert adapter.stats.bad_lines == 1
