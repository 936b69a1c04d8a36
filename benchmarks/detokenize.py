"""Detokenization per generated token on the default model's tokenizer: decoding the
whole output again at every token (what the engine did) against decoding only the new
piece (engine/output_text.py, as vLLM does), at several output lengths, side by side.

    python benchmarks/detokenize.py --out benchmarks/results/detokenize.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autellix.engine.model import default_model_path, load_tokenizer
from autellix.engine.output_text import OutputText, decoder
from autellix.machine import this_commit, this_machine

TEXT = (
    "The scheduler ranks each call by the service its program has had so far; a program "
    "that has waited long is promoted. Prices: 12.5 €, 9 ¥ — naïve café façade 😀. "
)


def per_token(tokenizer, ids: list[int], incremental: bool) -> float:
    out, decode = OutputText(), decoder(tokenizer)
    start = time.perf_counter()
    for end in range(1, len(ids) + 1):
        if incremental:
            out.decode(decode, ids, end, final=end == len(ids))
        else:
            tokenizer.decode(ids[:end], skip_special_tokens=True)
    return (time.perf_counter() - start) / len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tokenizer = load_tokenizer(str(default_model_path()))
    base = tokenizer.encode(TEXT * 400, add_special_tokens=False)
    rows = []
    for n in (256, 1024, 4096):
        ids = base[:n]
        whole, new = per_token(tokenizer, ids, False), per_token(tokenizer, ids, True)
        rows.append(f"| {n} | {whole * 1e6:.1f} us | {new * 1e6:.1f} us | {whole / new:.1f}x |")
        print(rows[-1], flush=True)
    lines = [
        "# Detokenization per generated token (SmolLM2's tokenizer)",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {this_machine()}; commit {this_commit()}",
        "",
        "| output tokens | before: whole output, transformers' decode | "
        "after: new piece, Rust decoder | speed-up |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
