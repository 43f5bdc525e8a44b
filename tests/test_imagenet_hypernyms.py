"""scripts/build_imagenet_hypernyms.py: WordNet's data.noun read into each class's hypernym chain
(the committed table, ``mmapp/models/imagenet_hypernyms.tsv``, is what it writes from WordNet 3.0)."""

from pathlib import Path

from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
builder = load_script("build_imagenet_hypernyms")

# A miniature data.noun in WordNet 3.0's format: offset, lexicographer file, type, word count (hex),
# word + lex id pairs, pointer count, pointers (symbol, offset, part of speech, source/target), gloss.
DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
00000001 03 n 01 entity 0 000 | that which exists
00000002 05 n 02 animal 0 beast 0 001 @ 00000001 n 0000 | a living organism
00000003 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 00000002 n 0000 ~ 00000004 n 0000 | a dog
00000004 05 n 01 golden_retriever 0 001 @ 00000003 n 0000 | a breed
00000005 05 n 01 Rex 0 001 @i 00000004 n 0000 | an instance
"""


def test_read_nouns_and_ancestors_follow_hypernym_links_nearest_first(tmp_path):
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    nouns = builder.read_nouns(tmp_path)
    assert nouns["00000003"] == (["dog", "domestic dog", "canis familiaris"], ["00000002"])  # "~" is not a parent
    assert builder.ancestors("00000004", nouns) == [["dog", "domestic dog", "canis familiaris"],
                                                    ["animal", "beast"], ["entity"]]
    assert builder.ancestors("00000005", nouns)[0] == ["golden retriever"]  # instance hypernym
    assert builder.ancestors("00000001", nouns) == []


def test_main_refuses_a_missing_wordnet_with_the_install_command(tmp_path, capsys):
    assert builder.main(["--wordnet", str(tmp_path), "--out", str(tmp_path / "out.tsv")]) == 1
    assert "apt-get install wordnet-base" in capsys.readouterr().err
    assert not (tmp_path / "out.tsv").exists()
