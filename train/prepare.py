"""``python -m train.prepare INPUT... --out DIR --tokenizer T``: a corpus -> token shards.

Streams documents from text files and folders (one file = one document), JSON lines
(``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``; one line = one document, ``--text-field``), Parquet
(read by row group) and local HuggingFace datasets (a ``datasets.save_to_disk`` folder), never
downloading anything, and writes llm.c-layout shards (``train_000000.bin``, ``val_000000.bin``,
... uint16 tokens when the vocabulary fits, uint32 otherwise) plus ``manifest.json``.

* Documents are delimited as the tokenizer's model expects (GPT-2: ``<|endoftext|>`` after each;
  LLaMA-3: ``<|begin_of_text|>`` before each; see :mod:`train.tokenizer`); a shard holds whole
  documents and is closed at the first document end at or past ``--shard-tokens``.
* ``--val-fraction`` holds out whole documents, chosen by a hash of the document's index.
* ``--workers N`` tokenizes in N processes; results are consumed in document order, so the
  shards are byte-identical whatever N. At most ``2 N + 2`` chunks of about 1 MB of text are in
  flight, so memory does not grow with the corpus.
* Resumable: shards are written as ``*.bin.partial`` and renamed when complete; after each
  completed shard ``progress.json`` records where to continue. A killed (Ctrl-C, disk full,
  SIGKILL) prepare rerun with the same arguments continues from its last complete shard.
  ``manifest.json`` is written last; readers (:func:`train.data.open_prepared`) need it.

The preparation itself is :mod:`train.corpus` (``prepare``, ``prepare_cached``).

Example::

    python -m train.prepare corpus.jsonl.zst --out data/corpus --tokenizer gpt2 \\
        --val-fraction 0.005 --workers 4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .corpus import PrepareError
from .corpus import prepare as prepare
from .corpus import prepare_cached as prepare_cached

__all__ = ["main", "prepare", "prepare_cached"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.prepare",
                                description="Tokenize a corpus into llm.c-layout token shards.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text files/folders, .jsonl[.gz|.zst], .parquet, a datasets folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default="gpt2",
                   help="byte, gpt2, or a tokenizer.json / tiktoken / SentencePiece file")
    p.add_argument("--text-field", default="text", help="JSONL field / column with the text")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="fraction of documents held out for validation")
    p.add_argument("--shard-tokens", type=int, default=100_000_000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    a = p.parse_args(argv)
    try:
        man = prepare(a.inputs, a.out, a.tokenizer, text_field=a.text_field,
                      val_fraction=a.val_fraction, shard_tokens=a.shard_tokens,
                      workers=a.workers, progress=not a.quiet)
    except (PrepareError, ImportError) as e:
        print(f"prepare: error: {e}", file=sys.stderr)
        return 130 if str(e).startswith("interrupted") else 2
    sp = man["splits"]
    print(f"prepare: {a.out}: train {sp['train']['docs']:,} docs / {sp['train']['tokens']:,} "
          f"tokens in {len(sp['train']['shards'])} shard(s), val {sp['val']['docs']:,} docs / "
          f"{sp['val']['tokens']:,} tokens ({man['tokenizer']['identity']}, {man['dtype']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
