import pytest
import torch

from vitcifar.model import PRESETS, ViT, ViTConfig, attention_map, vit_from_preset


def test_deit_tiny_parameter_count():
    # patch conv 9,408 + cls 192 + pos 12,480 + 12 blocks x 444,864 + norm 384 + head 1,930
    assert vit_from_preset("deit-tiny").num_parameters() == 5_362_762


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_stay_small_and_plain(preset):
    model = vit_from_preset(preset)
    assert model.num_parameters() <= 6_000_000
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1  # only the patch embedding


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("pos_embed", ["learned", "sincos2d"])
@pytest.mark.parametrize("image_size,patch_size", [(32, 4), (32, 8), (16, 2)])
def test_shapes_and_finite_gradients(pool, pos_embed, image_size, patch_size):
    cfg = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        dim=32,
        depth=2,
        heads=4,
        num_classes=7,
        pool=pool,
        pos_embed=pos_embed,
        drop_path=0.2,
    )
    model = ViT(cfg)
    x = torch.randn(3, 3, image_size, image_size)
    tokens = model.forward_features(x)
    n_tokens = (image_size // patch_size) ** 2 + (pool == "cls")
    assert tokens.shape == (3, n_tokens, 32)
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # fixed sin-cos positions are not trained
    has_pos_param = any(n == "pos_embed" for n, _ in model.named_parameters())
    assert has_pos_param == (pos_embed == "learned")


def test_attention_maps_are_distributions():
    model = ViT(ViTConfig(dim=32, depth=2, heads=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    attn = model.last_attention(x)
    assert attn.shape == (2, 2, 65, 65)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 65))
    assert attention_map(model, x).shape == (2, 8, 8)


def test_explicit_attention_matches_sdpa():
    model = ViT(ViTConfig(dim=32, depth=1, heads=2, dropout=0.0, emb_dropout=0.0)).eval()
    x = model._tokens(torch.randn(2, 3, 32, 32))
    block = model.blocks[0]
    torch.testing.assert_close(block(x), block(x, return_attention=True)[0], atol=1e-5, rtol=1e-5)


def test_eval_is_deterministic_and_dropout_active_in_train():
    model = ViT(ViTConfig(dim=32, depth=2, heads=2, dropout=0.5))
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"patch_size": 5}, "does not divide"),
        ({"dim": 100, "heads": 3}, "not divisible by heads"),
        ({"pool": "max"}, "'cls', 'mean'"),
        ({"pos_embed": "rope"}, "'learned', 'sincos2d'"),
        ({"depth": 0}, "depth must be a positive"),
        ({"drop_path": 1.5}, r"drop_path must be in \[0, 1\)"),
    ],
)
def test_bad_configs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**kwargs)


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="deit-tiny"):
        vit_from_preset("vit-huge")


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        ViT(ViTConfig(dim=32, depth=1, heads=2))(torch.randn(1, 3, 28, 28))


def test_config_round_trip():
    cfg = PRESETS["vit-fast"]
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ViTConfig fields"):
        ViTConfig.from_dict({**cfg.to_dict(), "bogus": 1})
