"""Write ``mmapp/models/imagenet_hypernyms.tsv``: each ImageNet-1k class's WordNet hypernyms.

The encoder's ImageNet classifier names 1000 fine classes ("golden retriever", "goldfinch",
"tench"); the objects vocabulary names everyday things at the level people use ("dog", "bird",
"fish"). A word is evidence for every class it is a hypernym of, so the ImageNet evidence
(``mmapp/models/imagenet_evidence.py``) sums a golden retriever's probability into "dog". This
script reads the hierarchy once from WordNet 3.0 (the synset ids of ImageNet are WordNet 3.0 noun
offsets) and writes, per class in the classifier's order, the head word (first lemma) of every
synset above it, following hypernym and instance-hypernym links to the root.

WordNet 3.0 comes from the Debian package ``wordnet-base`` (Princeton's WordNet licence: use, copy
and distribution allowed with its copyright notice, recorded in docs/objects.md); the class order
and synset ids from the copy inside timm. Nothing here runs at import or training time: the table
is committed.

    sudo apt-get install wordnet-base
    python scripts/build_imagenet_hypernyms.py [--wordnet /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "mmapp" / "models" / "imagenet_hypernyms.tsv"


def read_nouns(wordnet: Path) -> dict[str, tuple[list[str], list[str]]]:
    """WordNet's data.noun -> offset -> (lemmas, head first; [hypernym offsets])."""
    nouns = {}
    with open(wordnet / "data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):  # the licence header
                continue
            fields = line.split(" | ")[0].split()
            offset, words = fields[0], int(fields[3], 16)
            lemmas = [w.replace("_", " ").lower() for w in fields[4:4 + 2 * words:2]]
            i = 4 + 2 * words
            pointers = int(fields[i])
            parents = [fields[i + 1 + 4 * p + 1] for p in range(pointers)
                       if fields[i + 1 + 4 * p] in ("@", "@i")]
            nouns[offset] = (list(dict.fromkeys(lemmas)), parents)
    return nouns


def ancestors(offset: str, nouns: dict[str, tuple[list[str], list[str]]]) -> list[list[str]]:
    """The lemmas of every synset above ``offset``, nearest first, each synset once."""
    seen, order, frontier = {offset}, [], [offset]
    while frontier:
        nxt = []
        for o in frontier:
            for p in nouns[o][1]:
                if p not in seen:
                    seen.add(p)
                    order.append(nouns[p][0])
                    nxt.append(p)
        frontier = nxt
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"),
                        help="folder holding WordNet 3.0's data.noun (Debian package wordnet-base)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        print(f"WordNet 3.0 not found in {args.wordnet}: install it with `sudo apt-get install wordnet-base`",
              file=sys.stderr)
        return 1
    import timm.data

    synsets = (Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt").read_text().split()
    nouns = read_nouns(args.wordnet)
    lines = ["class\tsynset\thypernyms"]
    for c, synset in enumerate(synsets):
        lines.append(f"{c}\t{synset}\t{';'.join(','.join(lemmas) for lemmas in ancestors(synset[1:], nouns))}")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(synsets)} classes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
