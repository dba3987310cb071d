"""Tokenizers: the real Llama-3 (from ../shared) and Qwen3 (bundled) vocabularies, grammar tags,
EOS/BOS/PAD resolution, SentencePiece training (BPE, unigram, per-residue), `logos tokenizer`."""

from __future__ import annotations

import csv
import json
import random
import re

import pytest

from logos_jax import cli
from logos_jax.errors import LogosError
from logos_jax.grammar import (
    ALL_TAGS,
    LAYOUT_NAMES,
    Antibody,
    BindingSiteSearch,
    Complex,
    ForwardReaction,
    Material,
    Molecule,
    PocketProtein,
    Protein,
    Retrosynthesis,
    Transformation,
    encode_record,
    parse,
)
from logos_jax.tokenizer import (
    LogosTokenizer,
    add_grammar_tags,
    build_residue_tokenizer,
    bundled_tokenizer_path,
    train_sentencepiece,
)

EXAMPLES = {
    "retro": "<MoleculeS>CC(=O)Nc1ccc(O)cc1<MoleculeE><ReverseReact><MoleculeS>CC(=O)Cl<MoleculeE><MoleculeS>Nc1ccc(O)cc1<MoleculeE>",
    "search": "<ProteinS>MKTAYIAK<ProteinE><Search><ProteinS>MK<PocketS>T<PocketE>AYI<PocketS>A<PocketE>K<ProteinE>",
    "material": "<MaterialS><MetalS>[Zn][O]([Zn])([Zn])[Zn]<MetalE><MoleculeS>[O-]C(=O)c1ccc(cc1)C(=O)[O-]<MoleculeE><MaterialE>",
    "complex3": "<ProteinS>M<PocketS>NCC(=O)O<PocketE>K<ProteinE><MoleculeS>Clc1ccccc1Br<MoleculeE>",
}


@pytest.fixture
def tokenizer_cli():
    return cli.main


def references(fixtures, family):
    lines = (fixtures / "tokenizers" / "reference_encodings.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    return [r for r in rows if r["tokenizer"] == family]


@pytest.fixture(scope="module")
def qwen3():
    return LogosTokenizer.load(bundled_tokenizer_path("qwen3"))


@pytest.fixture(scope="module")
def llama3(shared_data):
    return LogosTokenizer.load(shared_data / "tokenizers" / "llama3")


@pytest.fixture(scope="module")
def qwen3_tagged(qwen3):
    return add_grammar_tags(qwen3)


@pytest.fixture(scope="module")
def llama3_tagged(llama3):
    return add_grammar_tags(llama3)


# ----------------------------------------------------------------------------------------------
# Real vocabularies


def test_qwen3_reference_encodings(fixtures, qwen3):
    rows = references(fixtures, "qwen3")
    assert len(rows) == 47
    for row in rows:
        assert qwen3.encode(row["text"], add_bos=False) == row["ids"], row["text"]
        assert qwen3.encode(row["text"]) == row["ids"]  # Qwen adds no BOS
    assert qwen3.encode_batch([r["text"] for r in rows]) == [r["ids"] for r in rows]
    assert (qwen3.vocab_size, qwen3.bos_id, qwen3.eos_ids, qwen3.pad_id) == (
        151669,
        None,
        (151643,),
        None,
    )


def test_llama3_reference_encodings(fixtures, llama3):
    rows = references(fixtures, "llama3")
    assert len(rows) == 47
    for row in rows:
        assert llama3.encode(row["text"], add_bos=False) == row["ids"], row["text"]
    assert llama3.encode("Hello world") == [128000, 9906, 1917]
    assert llama3.encode_batch(["Hello world", ""]) == [[128000, 9906, 1917], [128000]]
    assert (llama3.vocab_size, llama3.bos_id, llama3.eos_ids) == (128256, 128000, (128001,))


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_add_grammar_tags(family, request):
    base = request.getfixturevalue(family)
    tagged, added = request.getfixturevalue(f"{family}_tagged")
    assert base.missing_tags() == list(ALL_TAGS)
    with pytest.raises(LogosError, match=r"logos tokenizer add-tags.*|<ProteinS>") as info:
        base.require_tags()
    assert "<ProteinS>" in str(info.value) and "add-tags" in str(info.value)

    assert added == list(ALL_TAGS)
    tagged.require_tags()
    ids = tagged.tag_ids()
    assert list(ids.values()) == list(
        range(base.vocab_size, base.vocab_size + 16)
    )  # ALL_TAGS order
    assert tagged.vocab_size == base.vocab_size + 16
    assert add_grammar_tags(tagged)[1] == []  # idempotent

    text = "<MoleculeS>CCO<MoleculeE>"
    encoded = tagged.encode(text, add_bos=False)
    assert encoded[0] == ids["<MoleculeS>"] and encoded[-1] == ids["<MoleculeE>"]
    assert tagged.decode(encoded) == text
    with_bos = tagged.encode(text)
    assert tagged.decode(with_bos, skip_special=True) == text
    for name, example in EXAMPLES.items():
        assert parse(example).layout == name
        ids_ = tagged.encode(example)
        assert tagged.decode(ids_, skip_special=True) == example
        assert sum(i in ids.values() for i in ids_) == sum(example.count(t) for t in ALL_TAGS)
    # the base vocabulary is unchanged: plain text encodes as before
    assert tagged.encode("Hello world") == base.encode("Hello world")
    assert tagged.hash() != base.hash()


def test_tags_registered_special_are_still_kept(qwen3):
    from tokenizers import AddedToken, Tokenizer

    raw = Tokenizer.from_str(qwen3.tokenizer.to_str())
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ALL_TAGS])
    tok = LogosTokenizer(raw, bos_id=None, eos_ids=[151643], pad_id=151643)
    assert tok.missing_tags() == []
    ids = tok.encode(EXAMPLES["retro"]) + [151643, 151645]  # <|endoftext|>, <|im_end|>
    assert tok.decode(ids, skip_special=True) == EXAMPLES["retro"]
    assert tok.decode(ids).endswith("<|endoftext|><|im_end|>")
    assert "<MoleculeS>" not in raw.decode(
        ids, skip_special_tokens=True
    )  # what naive decoding does


def test_save_load_roundtrip_and_hash(qwen3_tagged, tmp_path):
    tok, _ = qwen3_tagged
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    again = LogosTokenizer.load(tmp_path / "tok")
    assert again.hash() == tok.hash()
    assert again.tag_ids() == tok.tag_ids()
    assert (again.bos_id, again.eos_ids, again.pad_id) == (None, (151643,), None)
    direct = LogosTokenizer.load(tmp_path / "tok" / "tokenizer.json")
    assert direct.hash() == tok.hash()


def test_special_ids_from_config_files(llama3_tagged, tmp_path):
    """Llama-3 Instruct style: generation_config lists three EOS ids, the tokenizer config a pad."""
    tok, _ = llama3_tagged
    folder = tmp_path / "llama3"
    tok.save(folder)
    (folder / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [128001, 128008, 128009], "temperature": 0.6})
    )
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(eos_token="<|eot_id|>", pad_token={"content": "<|eot_id|>"})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = LogosTokenizer.load(folder)
    assert loaded.eos_ids == (128001, 128008, 128009)
    assert (loaded.bos_id, loaded.pad_id) == (128000, 128009)
    assert loaded.hash() != tok.hash()

    out = tmp_path / "copy"
    out.mkdir()
    (out / "generation_config.json").write_text(json.dumps({"top_p": 0.9}))
    loaded.save(out)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"top_p": 0.9, "eos_token_id": [128001, 128008, 128009]}
    reloaded = LogosTokenizer.load(out)
    assert reloaded.eos_ids == loaded.eos_ids and reloaded.hash() == loaded.hash()


def test_config_json_eos_int_and_bos_off(tmp_path):
    folder = build_residue_tokenizer(tmp_path / "res")
    (folder / "config.json").write_text(json.dumps({"eos_token_id": 5, "bos_token_id": 1}))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(add_bos_token=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = LogosTokenizer.load(folder)
    assert tok.eos_ids == (5, 2) and tok.bos_id is None
    assert tok.encode("CC") == tok.encode("CC", add_bos=False)


def test_load_errors(tmp_path):
    with pytest.raises(LogosError, match="no tokenizer.json"):
        LogosTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LogosError, match="cannot read tokenizer"):
        LogosTokenizer.load(tmp_path)
    with pytest.raises(LogosError, match="bundled: qwen3"):
        bundled_tokenizer_path("llama3")


# ----------------------------------------------------------------------------------------------
# Built and trained tokenizers


def test_residue_tokenizer(tmp_path):
    tok = LogosTokenizer.load(build_residue_tokenizer(tmp_path / "res"))
    assert 100 <= tok.vocab_size <= 300
    assert (tok.bos_id, tok.eos_ids, tok.pad_id) == (1, (2,), 3)
    tok.require_tags()
    for text in EXAMPLES.values():
        ids = tok.encode(text)
        assert ids[0] == tok.bos_id and tok.decode(ids, skip_special=True) == text
        assert tok.token_id("<unk>") not in ids
    pieces = [tok.tokenizer.id_to_token(i) for i in tok.encode(EXAMPLES["complex3"], add_bos=False)]
    assert "Cl" in pieces and "Br" in pieces and pieces[:3] == ["<ProteinS>", "M", "<PocketS>"]
    assert tok.decode(tok.encode("é")) == "<s><unk>"


def training_lines(fixtures) -> list[str]:
    """~240 real grammar sequences from the fixture data (all layouts with raw data)."""
    g = fixtures / "grammar"
    lines = []
    fasta = g.joinpath("proteome_sample.fasta").read_text().split(">")[1:]
    lines += [encode_record("protein", "".join(rec.splitlines()[1:])) for rec in fasta]
    lines += [
        encode_record("antibody", json.loads(x))
        for x in g.joinpath("anarci_sample.jsonl").read_text().splitlines()
    ]
    smiles = [x.split()[0] for x in g.joinpath("moses_sample.smi").read_text().splitlines()]
    lines += [encode_record("molecule", s) for s in smiles]
    rng = random.Random(0)
    lines += [encode_record("molecule", s, randomize_smiles=True, rng=rng) for s in smiles]
    with g.joinpath("uspto50k_sample.csv").open() as f:
        rows = list(csv.DictReader(f))
    for layout in ("retro", "reaction"):
        lines += [encode_record(layout, r["rxn_mapped"]) for r in rows]
    lines += [
        encode_record("material", x)
        for x in g.joinpath("coremof_sample.jsonl").read_text().splitlines()
    ]
    for i, seq in enumerate(lines[:10]):
        sequence = parse(seq).objects.sequence
        pocket = list(range(i, len(sequence), 17))
        lines.append(encode_record("search", {"sequence": sequence, "pocket": pocket}))
        lines.append(
            encode_record("complex2", {"sequence": sequence, "pocket": pocket, "ligand": smiles[i]})
        )
    return lines


@pytest.fixture(scope="module")
def corpus(fixtures):
    lines = training_lines(fixtures)
    assert len(lines) >= 240
    return lines


HELD_OUT_PROTEIN = "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRGRRQPIPKARRPEGRTWAQPGYPWPLYGNEGCGWAGWLLSPRGSRPSWGPTDPRRRSRNLGKVIDTLTCGFADLMGYIPLVGAPLGGAARALAHGVRVLEDGVNYATGNLPGCSFSIFLLALLSCLTVPASA"


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_train_sentencepiece(corpus, tmp_path, model_type):
    import sentencepiece as spm

    out = train_sentencepiece(corpus[1:], tmp_path / "spm", vocab_size=500, model_type=model_type)
    tok = LogosTokenizer.load(out)
    assert tok.vocab_size <= 500 and (tok.bos_id, tok.eos_ids, tok.pad_id) == (1, (2,), 3)
    tok.require_tags()
    processor = spm.SentencePieceProcessor(model_file=str(out / "sentencepiece.model"))
    held_out = [corpus[0], Protein(HELD_OUT_PROTEIN).encode(), *EXAMPLES.values(), "two words é ☃"]
    for text in held_out:
        ids = tok.encode(text, add_bos=False)
        assert ids == processor.encode(text), text  # the tokenizer.json is the SentencePiece model
        assert tok.decode(ids) == text
    # with merges allowed, the vocabulary has multi-residue pieces (the control for per-residue mode)
    assert any(_multi_residue(p) for p in tok.tokenizer.get_vocab())


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_train_sentencepiece_per_residue(corpus, tmp_path, model_type):
    out = train_sentencepiece(
        corpus, tmp_path / "spm", vocab_size=500, model_type=model_type, per_residue=True
    )
    tok = LogosTokenizer.load(out)
    tok.require_tags()
    assert _protein_tokens(tok, HELD_OUT_PROTEIN) == list(HELD_OUT_PROTEIN)
    assert not any(_multi_residue(p) for p in tok.tokenizer.get_vocab())
    for text in EXAMPLES.values():
        assert tok.decode(tok.encode(text), skip_special=True) == text
    pre_tokens = [p for p, _ in tok.tokenizer.pre_tokenizer.pre_tokenize_str("c1cc(Cl)ccc1CBr")]
    assert pre_tokens == [
        "c1cc(",
        "Cl",
        ")ccc1",
        "C",
        "Br",
    ]  # atoms whole, merges between them allowed


def _multi_residue(piece: str) -> bool:
    return len(piece) > 1 and piece.isupper() and piece.isalpha() and piece not in ("Cl", "Br")


def _protein_tokens(tok: LogosTokenizer, sequence: str) -> list[str]:
    ids = tok.encode(Protein(sequence).encode(), add_bos=False)
    tags = tok.tag_ids()
    assert ids[0] == tags["<ProteinS>"] and ids[-1] == tags["<ProteinE>"]
    return [tok.decode([i]) for i in ids[1:-1]]


def test_train_rejects_bad_options(tmp_path):
    with pytest.raises(LogosError, match="model_type"):
        train_sentencepiece(["CCO"], tmp_path, vocab_size=300, model_type="wordpiece")


# ----------------------------------------------------------------------------------------------
# CLI


def test_cli_check_add_tags_train(tokenizer_cli, corpus, tmp_path, capsys):
    qwen_dir = str(bundled_tokenizer_path("qwen3").parent)
    assert tokenizer_cli(["tokenizer", "check", qwen_dir]) == 1
    out = capsys.readouterr().out
    assert _tag_table(out) == dict.fromkeys(ALL_TAGS, "MISSING") and "add-tags" in out

    tagged = tmp_path / "qwen3-tags"
    assert tokenizer_cli(["tokenizer", "add-tags", qwen_dir, str(tagged)]) == 0
    out = capsys.readouterr().out
    assert "added <ProteinS> = 151669" in out and "16 tag(s) added" in out
    assert tokenizer_cli(["tokenizer", "check", str(tagged)]) == 0
    out = capsys.readouterr().out
    assert _tag_table(out) == {t: str(151669 + i) for i, t in enumerate(ALL_TAGS)}

    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(corpus) + "\n")
    out_dir = tmp_path / "trained"
    argv = [
        "tokenizer",
        "train",
        "--input",
        str(data),
        "--out",
        str(out_dir),
        "--vocab-size",
        "400",
        "--per-residue",
    ]
    assert tokenizer_cli(argv) == 0
    assert "16 grammar tags" in capsys.readouterr().out
    assert LogosTokenizer.load(out_dir).missing_tags() == []

    assert (
        tokenizer_cli(
            [
                "tokenizer",
                "train",
                "--input",
                str(tmp_path / "no.txt"),
                "--out",
                str(out_dir),
                "--vocab-size",
                "400",
            ]
        )
        == 2
    )
    assert "training file not found" in capsys.readouterr().err


def _tag_table(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("<")}


ONE_PER_LAYOUT = {
    "protein": Protein("MKTAYIAK"),
    "antibody": Antibody("EVQLVESGG"),
    "molecule": Molecule("CC(=O)Oc1ccccc1C(=O)O"),
    "reaction": ForwardReaction(("CC(=O)Cl", "OCC"), "CC(=O)OCC"),
    "retro": Retrosynthesis("CC(=O)OCC", ("CC(=O)Cl", "OCC")),
    "material": Material("[Cu][Cu]", ("[O-]C(=O)c1cc(C(=O)[O-])cc(C(=O)[O-])c1",)),
    "pocket": PocketProtein("MKTAYIAK", (1, 5)),
    "pocket-smiles": PocketProtein("MKTAYIAK", (1, 5), expanded=True),
    "transformation": Transformation("MKTAYIAK", (1, 5)),
    "search": BindingSiteSearch("MKTAYIAK", (1, 5)),
    "complex1": Complex("MKTAYIAK", "c1ccccc1O"),
    "complex2": Complex("MKTAYIAK", "c1ccccc1O", (2,), level=2),
    "complex3": Complex("MKTAYIAK", "c1ccccc1O", (2,), level=3),
}


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_every_layout_tokenizes_with_single_id_tags(family, request):
    tok, _ = request.getfixturevalue(f"{family}_tagged")
    assert set(ONE_PER_LAYOUT) == set(LAYOUT_NAMES)
    tag_of_id = {i: t for t, i in tok.tag_ids().items()}
    for name, obj in ONE_PER_LAYOUT.items():
        text = obj.encode()
        ids = tok.encode(text)
        assert tok.decode(ids, skip_special=True) == text, name
        assert parse(tok.decode(ids, skip_special=True)).objects == obj
        tags_in_ids = [tag_of_id[i] for i in ids if i in tag_of_id]
        assert "".join(tags_in_ids) == "".join(re.findall(r"<[A-Za-z]+>", text)), name
        # every prompt ends with a tag, so prompt tokens are a prefix of the full sequence's tokens
        assert tok.encode(obj.prompt()) + tok.encode(obj.answer(), add_bos=False) == ids, name
