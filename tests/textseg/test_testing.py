"""The local model builders: the vocabulary layout GroundingDINO relies on, the real-size
configs (checked without building the 172M-parameter model), and the test-size SAM 2."""

from __future__ import annotations

from textseg.testing import SAM2_TEST_OVERRIDES, _dino_configs, write_vocab


def test_vocab_keeps_bert_ids_of_the_phrase_separators(tmp_path):
    tokens = write_vocab(tmp_path).read_text().splitlines()
    assert tokens.index("[PAD]") == 0 and tokens.index("[UNK]") == 100
    assert tokens.index("[CLS]") == 101 and tokens.index("[SEP]") == 102
    assert tokens.index(".") == 1012 and tokens.index("?") == 1029  # GroundingDINO's SPECIAL_TOKENS
    assert len(set(tokens)) == len(tokens)
    assert len(write_vocab(tmp_path / "big", size=30522).read_text().splitlines()) == 30522


def test_tiny_config_matches_grounding_dino_tiny():
    config, size = _dino_configs("tiny", vocab_size=30522)
    swin, bert = config.backbone_config, config.text_config
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads)) == (
        96,
        [2, 2, 6, 2],
        [3, 6, 12, 24],
    )
    assert (bert.hidden_size, bert.num_hidden_layers, bert.vocab_size) == (768, 12, 30522)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (256, 6, 6)
    assert (config.num_queries, config.max_text_len) == (900, 256)
    assert size == {"shortest_edge": 800, "longest_edge": 1333}


def test_test_sized_sam2_is_small_and_loads_from_its_folder(model_dirs, text_segmenter):
    model = text_segmenter.segmenter.predictor.model
    assert model.image_size == 256
    assert sum(p.numel() for p in model.parameters()) < 8_000_000
    assert (model_dirs["segmenter"] / "config.yaml").read_text().count("_target_") > 5
    assert any("image_size=256" in o for o in SAM2_TEST_OVERRIDES)
